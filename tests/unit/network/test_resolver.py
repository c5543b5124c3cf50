"""The resolver on loopback, with a fake gate and a fake upstream (no root)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.network import message
from corral.network.message import Answer
from corral.network.quota import QuotaLimits
from corral.network.resolver import Resolver, Verdict, parse_upstream, system_upstreams
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async

CLIENT = "127.0.0.1"
ZONE = {"ok.test": "203.0.113.7", "other.test": "203.0.113.8"}


@dataclass
class Gate:
    allowed: set[str] = field(default_factory=lambda: {"ok.test", "gone.test", "hidden.test"})
    answers: list[tuple[str, list[str]]] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    known: bool = True
    orgs: dict[str, str] = field(default_factory=dict)  # client address -> org

    async def org(self, client: str) -> str | None:
        return self.orgs.get(client)

    def verdict(self, client: str, name: str) -> Verdict:
        if not self.known:
            return Verdict.UNKNOWN
        return Verdict.ALLOW if name in self.allowed or name.endswith(".gone.test") else Verdict.DENY

    async def answered(self, client: str, name: str, answer: Answer) -> bool:
        self.answers.append((name, [r.value for r in answer.records]))
        return name != "hidden.test"

    def refused(self, client: str, name: str) -> None:
        self.refusals.append(name)


def respond(query: bytes) -> bytes:
    q = message.parse_query(query)
    name = "hidden.test" if q.name == "hidden.test" else q.name
    address = ZONE.get(name, "203.0.113.9" if name == "hidden.test" else None)
    if q.name == "gone.test" or q.name.endswith(".gone.test"):
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
    async with serving() as served:
        yield served


@contextlib.asynccontextmanager
async def serving(
    limits: QuotaLimits | None = None,
    *,
    timeout: float = 0.3,
    deadline: float = 4.0,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[tuple[Resolver, Gate]]:
    """A resolver on loopback whose upstream is the fake one (``respond``)."""
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
    server = Resolver(
        gate, [("127.0.0.1", port)], timeout=timeout, deadline=deadline, limits=limits, clock=clock
    )
    await server.start("127.0.0.1", 0)
    try:
        yield server, gate
    finally:
        await server.close()
        upstream.close()
        tcp_server.close()


async def ask(
    server: Resolver,
    name: str,
    qtype: int = message.A,
    *,
    tcp: bool = False,
    source: str = CLIENT,
    wait: float = 2.0,
) -> Answer:
    """The answer of ``server`` to a query for ``name`` sent from ``source`` (any
    127/8 address: each is another client)."""
    query = message.build_query(0x4242, name, qtype)
    if tcp:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))
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

        transport, _ = await loop.create_datagram_endpoint(
            Client, local_addr=(source, 0), remote_addr=("127.0.0.1", server.port)
        )
        try:
            transport.sendto(query)
            data = await asyncio.wait_for(got, wait)
        finally:
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


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    await eventually_async(condition, within, "condition not met in time")


async def test_a_client_over_its_outstanding_queries_is_refused_at_once() -> None:
    limits = QuotaLimits(outstanding=3, rate=1000, burst=1000)
    async with serving(limits, timeout=1.0, deadline=1.0) as (server, _):
        stuck = [asyncio.create_task(ask(server, f"n{i}.gone.test", wait=3)) for i in range(3)]
        await until(lambda: server.quota.outstanding(CLIENT) == 3)
        started = time.monotonic()
        assert (await ask(server, "ok.test")).rcode == message.REFUSED
        assert (await ask(server, "ok.test", tcp=True)).rcode == message.REFUSED
        assert time.monotonic() - started < 0.5, "refused at once, not queued"
        assert (await ask(server, "ok.test", source="127.0.0.2")).rcode == message.NOERROR
        assert [(await task).rcode for task in stuck] == [message.SERVFAIL] * 3
        assert server.quota.outstanding(CLIENT) == 0
        assert (await ask(server, "ok.test")).rcode == message.NOERROR


async def test_a_client_over_its_rate_is_refused_until_its_bucket_refills() -> None:
    clock = FakeClock()
    async with serving(QuotaLimits(rate=10, burst=3), clock=clock.monotonic) as (server, _):
        codes = [(await ask(server, "ok.test")).rcode for _ in range(5)]
        assert codes == [message.NOERROR] * 3 + [message.REFUSED] * 2
        assert (await ask(server, "ok.test", source="127.0.0.2")).rcode == message.NOERROR
        clock.advance(0.15)
        assert (await ask(server, "ok.test")).rcode == message.NOERROR


async def flood(server: Resolver, source: str, seconds: float) -> int:
    """Queries for names the upstream never answers, from ``source``, about 400 a
    second (what the firewall lets through with the default rate: ``dnsrate``) for
    ``seconds``, never waiting for an answer; how many were sent."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(source, 0), remote_addr=("127.0.0.1", server.port)
    )
    sent, end = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for _ in range(4):
                transport.sendto(message.build_query(sent & 0xFFFF, f"x{sent}.gone.test"))
                sent += 1
            await asyncio.sleep(0.01)
    finally:
        transport.close()
    return sent


async def test_a_flooding_org_leaves_the_others_their_answers() -> None:
    """The attack of issue 9 item 6 in miniature: four sandboxes of one org fill
    everything they may with names whose upstream never answers; another org's
    sandbox gets every answer, quickly."""
    limits = QuotaLimits(outstanding=4, rate=10_000, burst=10_000, org_outstanding=6, total=10, reserve=4)
    async with serving(limits, timeout=1.0, deadline=1.0) as (server, gate):
        attackers = [f"127.0.1.{i}" for i in range(1, 5)]
        gate.orgs.update(dict.fromkeys(attackers, "alpha") | {"127.0.2.1": "beta"})
        floods = [asyncio.create_task(flood(server, source, 2.0)) for source in attackers]
        await until(lambda: server.quota.at_upstream("org:alpha") == 6)
        for _ in range(10):
            started = time.monotonic()
            answer = await ask(server, "ok.test", source="127.0.2.1", wait=1.0)
            assert answer.rcode == message.NOERROR and time.monotonic() - started < 0.5
            assert server.quota.at_upstream("org:alpha") <= 6
        assert sum(await asyncio.gather(*floods)) > 1000


async def test_the_deadline_bounds_a_relay_over_every_upstream() -> None:
    loop = asyncio.get_running_loop()
    silent = [
        (await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)))[0]
        for _ in range(3)
    ]
    try:
        upstreams = [("127.0.0.1", int(t.get_extra_info("sockname")[1])) for t in silent]
        server = Resolver(Gate(), upstreams, timeout=0.4, deadline=0.6)
        started = time.monotonic()
        reply = await server.resolve(message.build_query(1, "ok.test"), CLIENT)
        assert reply is not None and message.parse_answer(reply).rcode == message.SERVFAIL
        assert time.monotonic() - started < 0.9, "three upstreams of 0.4 s each, but a deadline of 0.6 s"
        assert server.quota.upstream_total == 0
    finally:
        for transport in silent:
            transport.close()


async def test_the_nodes_lookups_for_a_client_count_as_its_orgs() -> None:
    async with serving(QuotaLimits(org_outstanding=1), timeout=1.0, deadline=1.0) as (server, gate):
        gate.orgs[CLIENT] = "alpha"
        stuck = asyncio.create_task(ask(server, "x.gone.test", wait=3))
        await until(lambda: server.quota.at_upstream("org:alpha") == 1)
        assert await server.lookup("other.test", client=CLIENT) == [], "alpha has no room upstream"
        assert await server.lookup("other.test") == [("203.0.113.8", 30)], "the node's own is not alpha's"
        assert (await stuck).rcode == message.SERVFAIL


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
