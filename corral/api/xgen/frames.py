"""The frames of the xgen WebSocket (/api/v1/sandboxes/{id}/ws).

A binary message is a 9-byte header, then the payload:

    type     uint8              the message type (``Kind``)
    channel  uint32 big-endian  0: control and files; 1+: one per process (client-chosen)
    id       uint32 big-endian  request/response correlation
    payload                     a MessagePack map, or raw bytes for ExecStdin,
                                ExecStdout, ExecStderr and the answer to FsRead

``decode`` raises ``BadFrame`` (with the Error code the connection answers with) for a
frame shorter than the header, an unknown type, or a payload that is not the
MessagePack map its type needs; ``encode`` never fails for what this surface sends.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

HEADER = struct.Struct(">BII")
HEADER_SIZE = HEADER.size  # 9
MAX_CHANNEL = 0xFFFFFFFF


class Kind(enum.IntEnum):
    PING = 0x01
    PONG = 0x02
    ERROR = 0x03
    ACK = 0x04
    EXEC_START = 0x20
    EXEC_STDIN = 0x21
    EXEC_STDOUT = 0x22
    EXEC_STDERR = 0x23
    EXEC_EXIT = 0x24
    EXEC_SIGNAL = 0x25
    EXEC_RESIZE = 0x26
    FS_READ = 0x30
    FS_WRITE = 0x31
    FS_LIST = 0x32
    FS_REMOVE = 0x33
    FS_WATCH = 0x34
    FS_EVENT = 0x35
    PORT_OPEN = 0x40
    PORT_CLOSE = 0x41
    SANDBOX_READY = 0x50
    SANDBOX_ERROR = 0x51
    SANDBOX_STATS = 0x52


RAW = frozenset({Kind.EXEC_STDIN, Kind.EXEC_STDOUT, Kind.EXEC_STDERR})
"""Types whose payload is raw bytes, not MessagePack."""
EMPTY = frozenset({Kind.PING, Kind.PONG, Kind.ACK, Kind.SANDBOX_READY})
"""Types that may come without a payload."""


class Code(enum.StrEnum):
    """The codes of Error frames (lower case, as xgen's clients expect)."""

    INVALID_PAYLOAD = "invalid_payload"
    UNKNOWN_MESSAGE = "unknown_message"
    EXEC_FAILED = "exec_failed"
    FS_ERROR = "fs_error"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    INTERNAL = "internal"


class BadFrame(Exception):
    """A frame this side cannot take; answered with an Error frame, the connection stays."""

    def __init__(self, code: Code, message: str, channel: int = 0, id: int = 0) -> None:
        super().__init__(message)
        self.code, self.message, self.channel, self.id = code, message, channel, id


@dataclass(frozen=True)
class Frame:
    kind: Kind
    channel: int
    id: int
    body: dict[str, Any]  # the MessagePack map ({} for raw and empty types)
    raw: bytes = b""  # the raw payload of RAW types


def decode(data: bytes) -> Frame:
    if len(data) < HEADER_SIZE:
        raise BadFrame(
            Code.INVALID_PAYLOAD, f"a frame needs a {HEADER_SIZE}-byte header, got {len(data)} bytes"
        )
    code, channel, id_ = HEADER.unpack_from(data)
    try:
        kind = Kind(code)
    except ValueError:
        raise BadFrame(Code.UNKNOWN_MESSAGE, f"unknown message type {code:#04x}", channel, id_) from None
    payload = data[HEADER_SIZE:]
    if kind in RAW:
        return Frame(kind, channel, id_, {}, payload)
    if not payload and kind in EMPTY:
        return Frame(kind, channel, id_, {})
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):  # ExtraData, FormatError, bad UTF-8, ...
        if kind in EMPTY:
            return Frame(kind, channel, id_, {})
        raise BadFrame(
            Code.INVALID_PAYLOAD, f"{kind.name}: the payload is not valid MessagePack", channel, id_
        ) from None
    if body is None and kind in EMPTY:
        body = {}
    if not isinstance(body, dict):
        raise BadFrame(
            Code.INVALID_PAYLOAD, f"{kind.name}: the payload must be a MessagePack map", channel, id_
        )
    return Frame(kind, channel, id_, body)


def encode(kind: Kind, channel: int = 0, id: int = 0, body: object = None, raw: bytes | None = None) -> bytes:
    """One message: ``raw`` bytes as the payload, else ``body`` packed (None: empty)."""
    header = HEADER.pack(kind, channel, id)
    if raw is not None:
        return header + raw
    if body is None:
        return header
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return header + packed
