"""The resolver on loopback, with a fake gate and a fake upstream (no root)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.network import message
from corral.network.message import Answer
from corral.network.resolver import Resolver, Verdict, parse_upstream, system_upstreams

CLIENT = "127.0.0.1"
ZONE = {"ok.test": "203.0.113.7", "other.test": "203.0.113.8"}


@dataclass
class Gate:
    allowed: set[str] = field(default_factory=lambda: {"ok.test", "gone.test", "hidden.test"})
    answers: list[tuple[str, list[str]]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    known: bool = True

    def verdict(self, client: str, name: str) -> Verdict:
        if not self.known:
            return Verdict.UNKNOWN
        return Verdict.ALLOW if name in self.allowed else Verdict.DENY

    async def answered(self, client: str, name: str, answer: Answer) -> bool:
        self.answers.append((name, [r.value for r in answer.records]))
        return name != "hidden.test"

    def refused(self, client: str, name: str) -> None:
        self.refusals.append(name)


def respond(query: bytes) -> bytes:
    q = message.parse_query(query)
    name = "hidden.test" if q.name == "hidden.test" else q.name
    address = ZONE.get(name, "203.0.113.9" if name == "hidden.test" else None)
    if q.name == "gone.test":
        return b""  # the upstream says nothing
    records = b""
    if address:
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 30, 4) + bytes(int(p) for p in address.split("."))
    header = struct.pack("!HHHHHH", q.id, 0x8180 | (0 if address else 3), 1, 1 if address else 0, 0, 0)
    return header + query[12 : q.end] + records


class Upstream(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = respond(data)
        if reply:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def resolver() -> AsyncIterator[tuple[Resolver, Gate]]:
    loop = asyncio.get_running_loop()

    async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        reply = respond(await reader.readexactly(size))
        writer.write(struct.pack("!H", len(reply)) + reply)
        await writer.drain()
        writer.close()

    for _ in range(10):  # a free UDP port whose TCP twin is free too
        upstream, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        port = upstream.get_extra_info("sockname")[1]
        try:
            tcp_server = await asyncio.start_server(tcp, "127.0.0.1", port)
            break
        except OSError:
            upstream.close()
    else:
        raise RuntimeError("no port free for both UDP and TCP")
    gate = Gate()
    server = Resolver(gate, [("127.0.0.1", port)], timeout=0.3)
    await server.start("127.0.0.1", 0)
    yield server, gate
    await server.close()
    upstream.close()
    tcp_server.close()


async def ask(server: Resolver, name: str, qtype: int = message.A, *, tcp: bool = False) -> Answer:
    query = message.build_query(0x4242, name, qtype)
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(struct.pack("!H", len(query)) + query)
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        data = await reader.readexactly(size)
        writer.close()
    else:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Client(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                got.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", server.port))
        transport.sendto(query)
        data = await asyncio.wait_for(got, 2)
        transport.close()
    answer = message.parse_answer(data)
    assert answer.id == 0x4242
    return answer


async def test_allowed_names_are_relayed_after_the_gate_saw_them(resolver: tuple[Resolver, Gate]) -> None:
    server, gate = resolver
    for tcp in (False, True):
        answer = await ask(server, "ok.test", tcp=tcp)
        assert answer.rcode == message.NOERROR and [r.value for r in answer.records] == ["203.0.113.7"]
    assert gate.answers == [("ok.test", ["203.0.113.7"])] * 2


async def test_denied_unknown_and_special_queries(resolver: tuple[Resolver, Gate]) -> None:
    server, gate = resolver
    assert (await ask(server, "other.test")).rcode == message.NXDOMAIN
    assert gate.refusals == ["other.test"]
    empty = await ask(server, "ok.test", message.AAAA)
    assert empty.rcode == message.NOERROR and empty.records == (), "no IPv6 egress, no AAAA"
    assert (await ask(server, "hidden.test")).rcode == message.NXDOMAIN, "the gate may veto an answer"
    assert (await ask(server, "gone.test")).rcode == message.SERVFAIL, "upstream timeout"
    gate.known = False
    assert (await ask(server, "ok.test")).rcode == message.REFUSED
    assert gate.answers == [("hidden.test", ["203.0.113.9"])]


async def test_malformed_query_gets_formerr(resolver: tuple[Resolver, Gate]) -> None:
    server, _ = resolver
    bad = struct.pack("!HHHHHH", 5, 0x0100, 1, 0, 0, 0) + b"\x09short"
    assert await server.resolve(bad, CLIENT) == struct.pack("!HHHHHH", 5, 0x8181, 0, 0, 0, 0)


async def test_lookup_for_the_node_itself(resolver: tuple[Resolver, Gate]) -> None:
    server, _ = resolver
    assert await server.lookup("other.test") == [("203.0.113.8", 30)]
    assert await server.lookup("missing.test") == []


async def test_no_upstream_means_servfail() -> None:
    server = Resolver(Gate(), [], timeout=0.2)
    reply = await server.resolve(message.build_query(1, "ok.test"), CLIENT)
    assert reply is not None and message.parse_answer(reply).rcode == message.SERVFAIL


def test_upstream_settings() -> None:
    assert parse_upstream("10.0.0.53") == ("10.0.0.53", 53)
    assert parse_upstream("10.0.0.53:5353") == ("10.0.0.53", 5353)
    assert parse_upstream("[::1]:54") == ("::1", 54)
    assert parse_upstream("fd00::53") == ("fd00::53", 53)
    for bad in ("dns.google", "10.0.0.1:0", "10.0.0.1:x"):
        with pytest.raises(ValueError):
            parse_upstream(bad)


def test_system_upstreams(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nsearch lan\nnameserver 10.0.0.1\nnameserver fe80::1%eth0 # link\noptions ndots:2\n")
    assert system_upstreams(conf) == [("10.0.0.1", 53), ("fe80::1", 53)]
    assert system_upstreams(tmp_path / "missing") == []
