"""The xgen WebSocket's frames (api/xgen/frames.py) and body mapping (mapping.py)."""

from __future__ import annotations

import struct

import msgpack
import pytest

from corral.api.xgen import mapping
from corral.api.xgen.frames import BadFrame, Code, Kind, decode, encode
from corral.api.xgen.schemas import CreateBody, Resources
from corral.errors import InvalidInput


def test_a_frame_round_trips() -> None:
    data = encode(Kind.FS_WRITE, 7, 9, {"path": "a", "content": b"\x00\xff"})
    assert data[:9] == struct.pack(">BII", 0x31, 7, 9)
    frame = decode(data)
    assert (frame.kind, frame.channel, frame.id) == (Kind.FS_WRITE, 7, 9)
    assert frame.body == {"path": "a", "content": b"\x00\xff"}
    raw = decode(encode(Kind.EXEC_STDIN, 3, 0, raw=b"\0\0\0\0hi"))
    assert raw.raw == b"\0\0\0\0hi" and raw.body == {}
    assert decode(encode(Kind.PING, 0, 5)).body == {}
    assert decode(struct.pack(">BII", 0x01, 0, 5) + msgpack.packb(None)).kind is Kind.PING


@pytest.mark.parametrize(
    ("data", "code", "where"),
    [
        (b"\x01\x00", Code.INVALID_PAYLOAD, (0, 0)),
        (struct.pack(">BII", 0x7E, 4, 5), Code.UNKNOWN_MESSAGE, (4, 5)),
        (struct.pack(">BII", 0x30, 1, 2) + b"\xc1", Code.INVALID_PAYLOAD, (1, 2)),
        (struct.pack(">BII", 0x30, 1, 3) + msgpack.packb([1, 2]), Code.INVALID_PAYLOAD, (1, 3)),
        (struct.pack(">BII", 0x30, 1, 4) + b"\x92\x01", Code.INVALID_PAYLOAD, (1, 4)),  # cut short
        (struct.pack(">BII", 0x30, 1, 6), Code.INVALID_PAYLOAD, (1, 6)),  # FsRead needs a map
    ],
)
def test_bad_frames_name_their_channel_and_id(data: bytes, code: Code, where: tuple[int, int]) -> None:
    with pytest.raises(BadFrame) as bad:
        decode(data)
    assert bad.value.code is code
    assert (bad.value.channel, bad.value.id) == where


def test_quantities() -> None:
    assert mapping.mib(512, "m") == 512
    assert mapping.mib("2Gi", "m") == 2048
    assert mapping.mib("1G", "m") == 954
    assert mapping.mib("256Mi", "m") == 256
    assert mapping.cores("500m") == 1 and mapping.cores(2) == 2 and mapping.cores(1.5) == 2
    for bad in ("lots", "-1Gi", "0"):
        with pytest.raises(InvalidInput) as refused:
            mapping.mib(bad, "resources.memory")
        assert refused.value.field == "resources.memory"
    with pytest.raises(InvalidInput):
        mapping.cores("many")


def test_create_request() -> None:
    body = CreateBody(
        timeout_seconds=60, resources=Resources(cpu=2, memory="1Gi", disk="4Gi"), env={"A": "b"}
    )
    request = mapping.create_request(body, "base")
    assert (request.cpu_count, request.memory_mb, request.disk_mb) == (2, 1024, 4096)
    assert (request.lifetime_s, request.timeout_s) == (60, 0)  # a lifetime, no idle timeout besides
    assert request.envs == {"A": "b"}
    assert mapping.create_request(CreateBody(), "base").lifetime_s == 3600
    assert mapping.capabilities(["sudo", "browser"]) == {"sudo", "browser"}
    assert mapping.ports([3000, 8080]) == [3000, 8080]
