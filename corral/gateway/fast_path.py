"""The gateway's fast path: plain requests answered by the client's connection itself
(``corral.api.front``), without ASGI, without a task, without waiting for anything but
the sandbox's server.

Which requests. ``FastPath.start`` takes a request only if all of these hold, and answers
None otherwise (the request then goes to the ASGI app and ``Gateway.serve``, which
answers every request the same way, only slower):

- the router reads it as a sandbox's port (not a redirect, not a malformed id or port);
- it has no body (``Content-Length`` absent or 0, no ``Transfer-Encoding``), no
  ``Upgrade``, no ``Expect``; it is not an ``OPTIONS`` with ``Origin`` (a preflight);
- it has no ``X-Forwarded-For`` / ``X-Forwarded-Proto`` (uvicorn's proxy-headers
  middleware, which the ASGI path has, may change the client's address or scheme);
- ``Access.check_now`` allows it: the sandbox's route and the API key (if any) are in
  the gateway's caches, the sandbox is awake, the kill switch is off; no cookie is to
  be set (a ``?token=`` request);
- an idle pooled connection to the sandbox's port is there (``Pool.take_idle``).

So the first request of a credential, a failure of access and anything unusual take the
ASGI path; the keep-alive traffic of a page or a client takes the fast path.

What it does is what ``Gateway.serve`` and ``forward`` do for such a request, with the
same helpers (``request_headers``, ``response_headers``, ``errors.envelope``): the
sandbox counts the request as activity; the response streams through as it arrives,
pausing the sandbox's connection while the client's transport is above its high-water
mark; a failure before the response starts is a 502 in the envelope (after one retry
on a new connection when the pooled one turned out closed); after it started, the
client's connection is cut; a client that goes away aborts the sandbox's connection;
the ``gateway_request`` metrics are the same. The response is written as uvicorn
writes one: its default headers first, ``Content-Length`` or else chunked (not for
HEAD, 204, 304), ``connection: close`` when the request did not keep alive, and the
connection closed if the body and its length disagree.

The fast path never awaits: it is driven by ``Connection.listener`` (called after the
sandbox connection's parser, never from within it) and by the client's connection
(``FastExchange.writable``, ``FastExchange.client_gone``). Only the retry on a new connection is a task.
"""

from __future__ import annotations

import asyncio
import http
from typing import Any, Protocol

from corral.errors import SandboxError
from corral.gateway.access import CREDENTIAL_HEADERS, Access
from corral.gateway.cors import CorsPolicy
from corral.gateway.errors import envelope
from corral.gateway.forward import IDEMPOTENT, cut_off, request_head
from corral.gateway.headers import request_headers, response_headers
from corral.gateway.replies import with_length
from corral.gateway.routing import Router, Target
from corral.gateway.services import GatewayServices
from corral.gateway.upstream import NO_BODY_STATUS, Connection, Pool

_REFUSED = frozenset({b"transfer-encoding", b"upgrade", b"expect", b"x-forwarded-for", b"x-forwarded-proto"})
_STATUS_LINES: dict[int, bytes] = {}

Headers = list[tuple[bytes, bytes]]


class Client(Protocol):
    """The client's connection, as the fast path uses it (``corral.api.front.FrontProtocol``)."""

    loop: asyncio.AbstractEventLoop
    write_paused: bool

    def send(self, data: bytes) -> None:
        """Send to the client now."""

    def close(self) -> None:
        """Close the connection once what was sent is out."""

    @property
    def default_headers(self) -> Headers: ...

    def exchange_finished(self, exchange: FastExchange) -> None:
        """The response is complete (the connection may serve its next request)."""


class FastPath:
    """Takes the plain requests it can answer at once (see the module docstring)."""

    def __init__(
        self, services: GatewayServices, router: Router, access: Access, cors: CorsPolicy, pool: Pool
    ) -> None:
        self.services = services
        self.router = router
        self.access = access
        self.cors = cors
        self.pool = pool
        self.served = 0  # requests the fast path took

    def start(self, scope: Any, client: Client, keep_alive: bool) -> FastExchange | None:
        """Take the request of ``scope`` (a request whose head is complete: ``method``,
        ``headers``, ``raw_path``, ``query_string``, ``client``, ``scheme``) and answer
        it on ``client``; None to leave it to the ASGI path."""
        origin = b""
        credentials = []
        for name, value in scope["headers"]:
            if name in _REFUSED or (name == b"content-length" and value != b"0"):
                return None
            if name in CREDENTIAL_HEADERS:
                credentials.append((name, value))
            elif name == b"origin" and not origin:  # the first, as Gateway.serve reads it
                origin = value
        method: str = scope["method"]
        if method == "OPTIONS" and origin:
            return None
        target = self.router.match(scope)
        if not isinstance(target, Target) or not target.port:
            return None
        grant = self.access.check_now(target, scope, tuple(credentials))
        if grant is None or grant.query_token:
            return None
        conn = self.pool.take_idle(grant.route.address, target.port)
        if conn is None:
            return None
        self.served += 1
        self.services.sandboxes.touch(target.sandbox_id)
        headers, _, _ = request_headers(
            scope, target.host, target.prefix, drop_authorization=grant.drop_authorization
        )
        cors = self.cors.response_headers(origin) if origin else []
        exchange = FastExchange(self, client, target, grant.route.address, method, keep_alive, cors)
        exchange.send(conn, request_head(method, target.path, headers), reused=True)
        return exchange


class FastExchange:
    """One request on the fast path, from the sandbox's answer to the client's last byte."""

    def __init__(
        self,
        fast_path: FastPath,
        client: Client,
        target: Target,
        address: str,
        method: str,
        keep_alive: bool,
        cors: Headers,
    ) -> None:
        self.fast_path = fast_path
        self.client = client
        self.target = target
        self.address = address
        self.method = method
        self.head_only = method == "HEAD"
        self.keep_alive = keep_alive
        self.cors = cors
        self.response_complete = False
        self.status = 0
        self.conn: Connection | None = None
        self._payload = b""
        self._reused = False
        self._early: SandboxError | None = None  # the request could not be written
        self._bytes_out = 0
        self._started = False
        self._chunked = False
        self._remaining = 0  # of a Content-Length
        self._scheduled = False
        self._retry: asyncio.Task[None] | None = None
        self._loop = client.loop
        self._out: list[bytes] = []  # written during a step, sent at its end

    # ---- driven by the connections ---------------------------------------------------

    def send(self, conn: Connection, payload: bytes, *, reused: bool) -> None:
        self.conn, self._payload, self._reused, self._early = conn, payload, reused, None
        conn.begin(head_only=self.head_only)
        conn.listener = self._step
        try:
            conn.write(payload)
        except SandboxError as exc:  # as in forward: 502, no second try
            self._early, self._reused = exc, False
            self._wake()

    def writable(self) -> None:
        """The client's transport is below its low-water mark again."""
        if self.conn is not None:
            self.conn.hold(False)
        self._wake()

    def client_gone(self) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        if self._retry is not None:
            self._retry.cancel()
        if self.conn is not None:
            self.conn.listener = None
            self.conn.abort(SandboxError("the client went away"))
        self._close()

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._step)

    def _step(self) -> None:
        self._scheduled = False
        conn = self.conn
        if self.response_complete or conn is None or self._retry is not None:
            return
        if self.client.write_paused:  # the client reads slowly: so does the sandbox's side
            conn.hold(True)
            return
        if not self._started:
            if not conn.head_done:
                failure = self._early or conn.failure
                if failure is not None:
                    self._failed(conn, failure)
                    self._send()
                return
            self._head(conn.status, response_headers(conn.headers, self.target.prefix, self.cors))
        while not self.response_complete:
            chunk = conn.take()
            if chunk:
                self._body(chunk)
            elif conn.done:
                self._end()
            else:
                if conn.failure is not None:
                    self._cut(conn.failure)
                break
        self._send()

    # ---- failures before the response -----------------------------------------------

    def _failed(self, conn: Connection, failure: SandboxError) -> None:
        if self._reused and not conn.got_bytes and self.method in IDEMPOTENT:
            self._reused = False  # once
            conn.listener = None
            conn.abort()
            self._retry = self._loop.create_task(self._reopen())
            return
        status, headers, body = envelope(failure, self.cors)
        self._head(status, with_length(headers, body))
        self._body(body)
        if not self.response_complete:
            self._end()

    async def _reopen(self) -> None:
        old = self.conn
        assert old is not None
        try:
            conn = await self.fast_path.pool.open(self.address, self.target.port)
        except SandboxError as exc:
            self._retry = None
            if not self.response_complete:
                self._failed(old, exc)
                self._send()
            return
        self._retry = None
        if self.response_complete:
            conn.abort()
        else:
            self.send(conn, self._payload, reused=False)

    # ---- the response, as uvicorn writes one ----------------------------------------

    def _head(self, status: int, headers: Headers) -> None:
        self.status, self._started = status, True
        if not 100 <= status < 600:  # uvicorn fails on such a status: the client is cut off
            self._cut(None)
            return
        content = [_status_line(status)]
        framed = False
        for name, value in [*self.client.default_headers, *headers]:
            if name == b"content-length" and not framed:
                self._remaining, framed = int(value), True
            content += [name, b": ", value, b"\r\n"]
        if not self.keep_alive:
            content.append(b"connection: close\r\n")
        if not framed and not self.head_only and status not in NO_BODY_STATUS:
            self._chunked = True
            content.append(b"transfer-encoding: chunked\r\n")
        if self.head_only:
            self._remaining = 0
        content.append(b"\r\n")
        self._out.append(b"".join(content))

    def _body(self, chunk: bytes) -> None:
        self._bytes_out += len(chunk)
        if self.head_only or not chunk:
            return
        if self._chunked:
            self._out.append(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            return
        self._remaining -= len(chunk)
        if self._remaining < 0:  # longer than its Content-Length
            self._cut(None)
            return
        self._out.append(chunk)

    def _end(self) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
        elif self._remaining:  # shorter than its Content-Length
            self._cut(None)
            return
        self.response_complete = True
        self._close()
        self._send()
        if not self.keep_alive:
            self.client.close()
        self.client.exchange_finished(self)

    def _cut(self, failure: SandboxError | None) -> None:
        if failure is not None:
            cut_off(failure)
        self.response_complete = True
        self._close()
        self._send()
        self.client.close()

    def _send(self) -> None:
        if self._out:
            out = self._out
            self.client.send(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _close(self) -> None:
        """The sandbox's connection back to the pool (or closed), the metrics."""
        if self.conn is not None:
            self.conn.listener = None
            self.fast_path.pool.release(self.conn)
        self.fast_path.services.metrics.gateway_request(self.status or 499, 0, self._bytes_out)


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        try:
            phrase = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %b\r\n" % (status, phrase)
    return line
