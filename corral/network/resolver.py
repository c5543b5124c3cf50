"""The sandboxes' DNS server: listens on the bridge address, port 53, UDP and TCP;
answers only what each sandbox's policy allows; forwards to the upstream servers.

Every sandbox's ``resolv.conf`` says ``nameserver <bridge address>``. For each query
the resolver asks its :class:`Gate` (the node) about the client address and name:

* unknown client (not a sandbox of this node) -> REFUSED;
* class other than IN -> REFUSED;
* a name the policy does not allow -> NXDOMAIN, and the gate reports a denial;
* AAAA for an allowed name -> empty NOERROR (there is no IPv6 egress, so an IPv6
  answer would only make clients wait before they fall back to IPv4);
* otherwise the query is relayed to the upstream servers in order (UDP for UDP
  clients, TCP for TCP clients; a truncated UDP answer is relayed as is, so the client
  retries over TCP) with a fresh random id, the answer must match the question, and
  the gate sees it before the client does: it pins the answer's addresses into the
  sandbox's firewall set (resolve-and-pin) and may still refuse it (NXDOMAIN), e.g.
  when a CNAME leads to a denied name. Upstream failure -> SERVFAIL.

Nothing is cached: each answer's TTL comes from the upstream, and the pin outlives
it. Work is bounded, so one sandbox or org cannot take DNS from the others
(``quota.py``): per sandbox a query rate and a number of queries being answered at
once, per org a number of queries at the upstream at once, and the node's pool of
upstream queries with a reserve for tenants within their limits. A query beyond any of
them is answered REFUSED at once (a query whose question cannot be read gets nothing);
nothing is queued. Each upstream exchange has a timeout and the whole relay a deadline
(over all upstreams), so a name whose upstream never answers holds its slot for
``deadline`` seconds at most. 16 open TCP connections per client, TCP connections idle
for 10 s are closed.

Contract: :meth:`Resolver.start` raises OSError when it cannot bind (the node turns
that into Unavailable); :meth:`Resolver.close` is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import logging
import secrets
import struct
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from corral.network import message
from corral.network.message import Answer, MalformedMessage
from corral.network.quota import Quota, QuotaLimits, Ticket

log = logging.getLogger("corral.network")
_FREE_PORT_ATTEMPTS = 10

Upstream = tuple[str, int]
MAX_TCP_PER_CLIENT = 16
MAX_TASKS = 4096


class Verdict(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"
    UNKNOWN = "unknown"  # the client is not one of our sandboxes


class Gate(Protocol):
    def verdict(self, client: str, name: str) -> Verdict: ...

    async def answered(self, client: str, name: str, answer: Answer) -> bool:
        """Pin what ``answer`` opens; False to hide it from the client (NXDOMAIN)."""

    def refused(self, client: str, name: str) -> None:
        """A name was refused (report it; must not block)."""

    async def org(self, client: str) -> str | None:
        """The org of the sandbox at ``client`` (None: unknown, yet or at all)."""


class Resolver:
    def __init__(
        self,
        gate: Gate,
        upstreams: Sequence[Upstream],
        *,
        timeout: float = 2.0,
        deadline: float = 4.0,
        limits: QuotaLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``timeout``: of one upstream exchange; ``deadline``: of a relay, over every
        upstream tried; ``limits``: see ``quota.py``, whose rates ``clock`` times."""
        self._gate = gate
        self.upstreams = tuple(upstreams)
        self._timeout = timeout
        self._deadline = deadline
        self.quota = Quota(limits, clock=clock)
        self._connections: dict[str, int] = {}  # open TCP connections per client
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int = 53) -> None:
        """Listen on ``host:port`` (UDP and TCP; port 0: any free port, the same for
        both, then in :attr:`port`)."""
        loop = asyncio.get_running_loop()
        for attempt in range(1 if port else _FREE_PORT_ATTEMPTS):
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port))
            self._udp = transport
            self.port = int(transport.get_extra_info("sockname")[1])
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, self.port, reuse_address=True)
                return
            except OSError:
                transport.close()
                self._udp = None
                if port or attempt == _FREE_PORT_ATTEMPTS - 1:
                    raise
                # a free UDP port whose TCP twin is taken: try another

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- serving -------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        ticket = self.quota.enter(addr[0])
        if ticket is None or len(self._tasks) >= MAX_TASKS:
            if ticket is not None:
                ticket.close()
            refusal = _refusal(data)
            if refusal is not None and self._udp is not None:
                self._udp.sendto(refusal, addr)
            return
        self._spawn(self._answer_udp(data, addr, ticket))

    async def _answer_udp(self, data: bytes, addr: tuple[str, int], ticket: Ticket) -> None:
        with ticket:
            response = await self.resolve(data, addr[0], tcp=False, ticket=ticket)
        if response is not None and self._udp is not None:
            self._udp.sendto(response, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if isinstance(peer, tuple) else ""
        if self._connections.get(client, 0) >= MAX_TCP_PER_CLIENT or len(self._tasks) >= MAX_TASKS:
            writer.close()
            return
        self._connections[client] = self._connections.get(client, 0) + 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while True:
                try:
                    (size,) = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), 10.0))
                    data = await asyncio.wait_for(reader.readexactly(size), 10.0)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                ticket = self.quota.enter(client)
                if ticket is None:
                    response = _refusal(data)
                else:
                    with ticket:
                        response = await self.resolve(data, client, tcp=True, ticket=ticket)
                if response is None:
                    return
                writer.write(struct.pack("!H", len(response)) + response)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            left = self._connections.get(client, 1) - 1
            if left <= 0:
                self._connections.pop(client, None)
            else:
                self._connections[client] = left
            writer.close()

    # -- answering -----------------------------------------------------------------

    async def resolve(
        self, data: bytes, client: str, *, tcp: bool = False, ticket: Ticket | None = None
    ) -> bytes | None:
        """The response to send ``client`` for the query ``data`` (None: no answer).
        ``ticket``: what the query holds (the caller closes it); without one the query
        takes only its slot at the upstream, for as long as this call."""
        with self.quota.ticket() as own:
            return await self._resolve(data, client, tcp, ticket or own)

    async def _resolve(self, data: bytes, client: str, tcp: bool, ticket: Ticket) -> bytes | None:
        try:
            question = message.parse_query(data)
        except MalformedMessage:
            return message.error_reply(data, message.FORMERR)
        verdict = self._gate.verdict(client, question.name)
        if verdict is Verdict.UNKNOWN or question.qclass != 1:
            return message.reply(data, question, message.REFUSED)
        if verdict is Verdict.DENY:
            self._gate.refused(client, question.name)
            return message.reply(data, question, message.NXDOMAIN)
        if question.qtype == message.AAAA:
            return message.reply(data, question, message.NOERROR)
        if not ticket.upstream(await self._org_key(client)):
            return message.reply(data, question, message.REFUSED)
        ident = secrets.randbelow(0x10000)
        try:
            raw = await self._ask(message.with_id(data, ident), tcp=tcp)
            answer = message.parse_answer(raw)
            if answer.id != ident or (answer.question.name, answer.question.qtype) != (
                question.name,
                question.qtype,
            ):
                raise MalformedMessage("the answer does not match the question")
        except (OSError, TimeoutError, MalformedMessage) as exc:
            log.debug("upstream failed for %s: %s", question.name, exc)
            return message.reply(data, question, message.SERVFAIL)
        if not await self._gate.answered(client, question.name, answer):
            return message.reply(data, question, message.NXDOMAIN)
        return message.with_id(raw, question.id)

    async def lookup(self, name: str, *, client: str | None = None) -> list[tuple[str, int]]:
        """The IPv4 addresses (with TTLs) of ``name`` per the upstream, for the node's
        own use (blocking a denied name's addresses). Empty on any failure. With
        ``client`` (asked because of that client's query) it counts as that client's
        org's at the upstream, and is empty when the org has no room there."""
        ident = secrets.randbelow(0x10000)
        with self.quota.ticket() as ticket:
            if client is not None and not ticket.upstream(await self._org_key(client)):
                return []
            try:
                raw = await self._ask(message.build_query(ident, name), tcp=False)
                answer = message.parse_answer(raw)
                if answer.truncated:
                    raw = await self._ask(message.build_query(ident, name), tcp=True)
                    answer = message.parse_answer(raw)
            except (OSError, TimeoutError, MalformedMessage):
                return []
        if answer.id != ident:
            return []
        return [(r.value, r.ttl) for r in answer.records if r.rtype == message.A]

    async def _org_key(self, client: str) -> str:
        """Whose upstream slots a query of ``client`` takes: its org's, or (org unknown)
        its own."""
        org = await self._gate.org(client)
        return f"org:{org}" if org is not None else f"client:{client}"

    async def _ask(self, query: bytes, *, tcp: bool) -> bytes:
        """The first answer of the upstreams in order, each given ``timeout``, all
        together ``deadline``."""
        error: Exception = OSError("no upstream answered")
        loop = asyncio.get_running_loop()
        end = loop.time() + self._deadline
        exchange = _tcp_exchange if tcp else _udp_exchange
        for upstream in self.upstreams:
            left = end - loop.time()
            if left <= 0:
                break
            try:
                return await asyncio.wait_for(exchange(upstream, query), min(self._timeout, left))
            except (OSError, TimeoutError, MalformedMessage) as exc:
                error = exc
        raise error


def _refusal(query: bytes) -> bytes | None:
    """REFUSED for ``query`` (over a limit), or None when its question cannot be read."""
    try:
        question = message.parse_query(query)
    except MalformedMessage:
        return None
    return message.reply(query, question, message.REFUSED)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self._resolver = resolver

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._resolver._datagram(data, addr)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, ident: bytes) -> None:
        self.ident = ident
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:2] == self.ident and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _udp_exchange(upstream: Upstream, query: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Reply(query[:2]), remote_addr=upstream)
    try:
        transport.sendto(query)
        return await protocol.done
    finally:
        transport.close()


async def _tcp_exchange(upstream: Upstream, query: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*upstream)
    try:
        writer.write(struct.pack("!H", len(query)) + query)
        await writer.drain()
        (size,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise MalformedMessage("the upstream closed the connection mid-answer") from exc
    finally:
        writer.close()


def system_upstreams(path: Path = Path("/etc/resolv.conf")) -> list[Upstream]:
    """The ``nameserver`` lines of the host's resolv.conf (port 53), in order."""
    out: list[Upstream] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            out.append((fields[1].split("%", 1)[0], 53))
    return out


def parse_upstream(text: str) -> Upstream:
    """``"10.0.0.53"``, ``"10.0.0.53:5353"``, ``"[::1]:53"`` or ``"::1"``."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(f"not an upstream DNS server address: {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"not an upstream DNS server address: {text!r}")
    return host, number
