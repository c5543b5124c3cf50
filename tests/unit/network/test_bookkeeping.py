"""Address pool, pin board, NFLOG parsing and the denial rate limit (no root)."""

from __future__ import annotations

import socket
import struct

import pytest

from corral.errors import CorralError, LimitExceeded
from corral.network import nflog
from corral.network.denials import Denials
from corral.network.pins import MIN_PIN, PinBoard
from corral.network.pool import AddressPool
from tests.support.clock import FakeClock


def test_pool_walks_forward_and_wraps() -> None:
    pool = AddressPool("10.9.0.0/29")
    assert str(pool.gateway) == "10.9.0.1" and pool.size == 5
    assert pool.allocate([]) == "10.9.0.2"
    assert pool.allocate(["10.9.0.2"], after="10.9.0.2") == "10.9.0.3"
    assert pool.allocate([], after="10.9.0.6") == "10.9.0.2", "wraps, skips the gateway"
    assert pool.allocate(["10.9.0.4"], after="10.9.0.3") == "10.9.0.5"
    with pytest.raises(LimitExceeded):
        pool.allocate([f"10.9.0.{i}" for i in range(2, 7)])
    for bad in ("10.9.0.0/30", "fd00::/64", "nope", "10.9.0.1/24"):
        with pytest.raises(CorralError):
            AddressPool(bad)


def test_pins_are_written_rarely_and_never_shrink() -> None:
    now = [1000.0]
    board = PinBoard(clock=lambda: now[0])
    board.record("a.com", [("1.1.1.1", 30)])
    assert board.due([("1.1.1.1", 30)]) == [("1.1.1.1", 2 * MIN_PIN)]
    assert board.due([("1.1.1.1", 30)]) == [], "still pinned long enough"
    now[0] += MIN_PIN + 5
    assert board.due([("1.1.1.1", 30)]) == [("1.1.1.1", 2 * MIN_PIN)], "less than the TTL left: refresh"
    assert board.due([("1.1.1.1", 3600)]) == [("1.1.1.1", 7200)]
    assert board.name_of("1.1.1.1") == "a.com" and board.name_of("2.2.2.2") is None
    now[0] += 100
    assert board.keep(lambda name: name == "b.com") == []
    assert len(board) == 0


def test_pins_kept_for_a_new_policy() -> None:
    now = [0.0]
    board = PinBoard(clock=lambda: now[0])
    board.record("a.com", [("1.1.1.1", 100)])
    board.record("b.com", [("2.2.2.2", 100)])
    board.due([("1.1.1.1", 100), ("2.2.2.2", 100)])
    now[0] += 50
    assert board.keep(lambda name: name == "a.com") == [("1.1.1.1", 150)]


def nflog_datagram(prefix: bytes, packet: bytes) -> bytes:
    def attr(kind: int, payload: bytes) -> bytes:
        body = struct.pack("=HH", 4 + len(payload), kind) + payload
        return body + b"\x00" * (-len(body) % 4)

    body = struct.pack("=BBH", socket.AF_INET, 0, 0) + attr(10, prefix + b"\x00") + attr(9, packet)
    return struct.pack("=IHHII", 16 + len(body), (4 << 8) | 0, 0, 0, 0) + body


def ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(l4),
            0,
            0,
            64,
            proto,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        + l4
    )


def test_nflog_messages_are_parsed() -> None:
    tcp = ipv4("10.213.0.5", "8.8.8.8", 6, struct.pack("!HH", 40000, 443) + b"\x00" * 16)
    icmp = ipv4("10.213.0.5", "8.8.4.4", 1, b"\x08\x00\x00\x00")
    data = nflog_datagram(b"policy", tcp) + nflog_datagram(b"host", icmp) + b"\x01\x02"
    assert nflog.parse(data) == [
        nflog.Logged("policy", "10.213.0.5", "8.8.8.8", "tcp", 443),
        nflog.Logged("host", "10.213.0.5", "8.8.4.4", "icmp", None),
    ]
    assert nflog.parse_ipv4("x", b"\x60" + b"\x00" * 39) is None, "not IPv4"


async def test_denials_are_rate_limited_per_sandbox() -> None:
    got: list[tuple[str, dict[str, object]]] = []

    async def on_denied(sid: str, event: dict[str, object]) -> None:
        got.append((sid, event))

    clock = FakeClock()
    denials = Denials(
        on_denied,
        lambda ip: {"10.0.0.2": "sb-a"}.get(ip),
        lambda s, ip: "x.com",
        burst=3,
        clock=clock.monotonic,
    )
    await denials.start(group=None)  # resolver denials only
    assert not denials.listening
    for i in range(10):
        denials.report("sb-a", {"n": i})
    denials.report("sb-b", {"n": 0})
    denials._kernel(nflog.Logged("policy", "10.0.0.2", "1.2.3.4", "tcp", 80))
    denials._kernel(nflog.Logged("policy", "10.9.9.9", "1.2.3.4", "tcp", 80))
    await denials.delivered()
    assert [e["n"] for s, e in got if s == "sb-a"] == [0, 1, 2]
    assert [e for s, e in got if s == "sb-b"] == [{"n": 0}]
    clock.advance(1.05)
    denials._kernel(nflog.Logged("policy", "10.0.0.2", "1.2.3.4", "tcp", 80))
    await denials.delivered()
    assert got[-1] == (
        "sb-a",
        {"dst": "1.2.3.4", "port": 80, "proto": "tcp", "host": "x.com", "reason": "policy", "suppressed": 8},
    )
    await denials.close()
