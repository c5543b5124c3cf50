"""Host side of the agent wire protocol (docs/agent-protocol.md): frames and JSON.

Everything read here comes from an untrusted agent. ``read_frame`` never buffers more
than one frame of at most ``MAX_PAYLOAD`` bytes, never waits past its timeout and
raises ``AgentError`` for anything malformed; ``answers.py`` validates what an answer
holds. Agent error codes become ``corral.errors`` types in ``raise_for_answer``.

The agent itself (``sandbox_agent.py``) is standalone and keeps its own copy of the
few constants it needs (frame types, ``MAX_PAYLOAD``, its error codes);
tests/unit/agent/test_constants.py fails when the two disagree.
"""

from __future__ import annotations

import asyncio
import enum
import json
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.errors import (
    AgentError,
    Conflict,
    CorralError,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    NotFound,
)

MAX_PAYLOAD = 1 << 20
"""Largest payload of one frame, both directions."""

DATA_CHUNK = 256 << 10
"""Size of the DATA frames the host sends for ``file.write``."""

AGENT_FILE = pathlib.Path(__file__).with_name("sandbox_agent.py")
"""The agent program on the host; runc bind-mounts it into each sandbox."""

HEADER_SIZE = 5
MESSAGE_LIMIT = 1000  # characters of an agent's error message kept


class FrameType(enum.IntEnum):
    STDIN = 0x00
    STDOUT = 0x01
    STDERR = 0x02
    EXIT = 0x03
    SCROLLBACK_END = 0x04
    DATA = 0x05
    EOF = 0x06
    JSON = 0x10


@dataclass(frozen=True)
class Frame:
    type: FrameType
    payload: bytes


def agent_argv(python: str, agent_path: str, *options: str) -> list[str]:
    """The command line that starts the agent at ``agent_path`` with ``options``
    (``--listen-fd 3`` or ``--socket PATH``).

    ``python -I -S agent.py`` would work too, but CPython keeps a script's syntax tree
    alive while the script runs (about 3 MB for the agent); compiling it from ``-c``
    frees the tree before the agent's loop starts. ``sys.argv`` ends up as if the file
    had been run directly."""
    bootstrap = (
        "import sys;p=sys.argv[0]=" + repr(agent_path) + ";exec(compile(open(p,'rb').read(),p,'exec'))"
    )
    return [python, "-I", "-S", "-X", "frozen_modules=on", "-c", bootstrap, *options]


_ERRORS: dict[str, type[CorralError]] = {
    "not_found": NotFound,
    "invalid": InvalidInput,
    "not_dir": InvalidInput,
    "is_dir": InvalidInput,
    "exists": Conflict,
    "not_empty": Conflict,
    "no_space": InsufficientStorage,
    "denied": Forbidden,
    "no_pty": Conflict,  # every PTY the sandbox may open is open
}


def encode_frame(ftype: FrameType, payload: bytes = b"") -> bytes:
    """The bytes of one frame; ValueError if ``payload`` is over MAX_PAYLOAD."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return bytes((ftype,)) + len(payload).to_bytes(4, "big") + payload


def write_frame(writer: asyncio.StreamWriter, ftype: FrameType, payload: bytes = b"") -> None:
    """Queue one frame; the caller drains. ValueError if the payload is too large."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    writer.write(bytes((ftype,)) + len(payload).to_bytes(4, "big"))
    if payload:
        writer.write(payload)


async def read_frame(reader: asyncio.StreamReader, timeout: float | None) -> Frame | None:
    """The next frame, or None when the stream ends cleanly between frames.

    AgentError for a frame cut short, a payload over MAX_PAYLOAD, an unknown frame
    type, a broken connection, or no whole frame within ``timeout`` seconds (None: no
    limit of its own; an enclosing ``asyncio.timeout`` still applies)."""
    try:
        async with asyncio.timeout(timeout):
            try:
                header = await reader.readexactly(HEADER_SIZE)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    return None
                raise AgentError("agent closed the connection inside a frame header") from exc
            size = int.from_bytes(header[1:], "big")
            if size > MAX_PAYLOAD:
                raise AgentError(f"agent sent a frame of {size} bytes (limit {MAX_PAYLOAD})")
            try:
                ftype = FrameType(header[0])
            except ValueError:
                raise AgentError(f"agent sent an unknown frame type {header[0]:#04x}") from None
            payload = await reader.readexactly(size) if size else b""
    except asyncio.IncompleteReadError as exc:
        raise AgentError("agent closed the connection inside a frame") from exc
    except TimeoutError as exc:
        raise AgentError(f"agent sent nothing for {timeout:g} s") from exc
    except (ConnectionError, OSError) as exc:
        raise AgentError(f"connection to the agent failed: {exc}") from exc
    return Frame(ftype, payload)


def encode_json(obj: Mapping[str, Any]) -> bytes:
    """One request frame's payload. InvalidInput when it would not fit in a frame."""
    try:
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"request cannot be encoded: {exc}") from exc
    if len(data) > MAX_PAYLOAD:
        raise InvalidInput(f"request of {len(data)} bytes is over the {MAX_PAYLOAD} byte limit")
    return data


def decode_json(payload: bytes) -> dict[str, Any]:
    """A JSON object from the agent; AgentError for anything else."""
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AgentError("agent sent malformed JSON") from exc
    if not isinstance(obj, dict):
        raise AgentError("agent sent JSON that is not an object")
    return obj


def raise_for_answer(answer: Mapping[str, Any]) -> None:
    """Return if ``answer`` has ``ok: true``; raise its error as a corral error."""
    ok = answer.get("ok")
    if ok is True:
        return
    if ok is not False:
        raise AgentError("agent answer has no ok field")
    code = answer.get("code")
    message = answer.get("message")
    text = message[:MESSAGE_LIMIT] if isinstance(message, str) else "agent error"
    if not isinstance(code, str):
        raise AgentError(f"agent error without a code: {text}")
    raise _ERRORS.get(code, AgentError)(text)


def json_answer(frame: Frame | None) -> dict[str, Any]:
    """The JSON object a frame carries, checked with ``raise_for_answer``."""
    if frame is None:
        raise AgentError("agent closed the connection without an answer")
    if frame.type is not FrameType.JSON:
        raise AgentError(f"agent sent {frame.type.name} where an answer was due")
    answer = decode_json(frame.payload)
    raise_for_answer(answer)
    return answer
