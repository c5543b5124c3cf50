"""One HTTP request into a sandbox, and its answer back, streamed both ways.

Contracts:
- The request body is never held whole: each piece the server in front hands over is
  written to the sandbox and drained before the next is read (a 1 GB upload costs a
  few hundred KB). A chunked body is re-chunked; a chunked body that arrived in one
  piece is sent with a length.
- The body is sent while the response is awaited, so a server that answers before
  reading everything (413, 401) is heard.
- The response body goes out piece by piece as it arrives, nothing is coalesced but
  what is already waiting, so Server-Sent Events reach the client one by one.
- Before the response starts, every failure of the sandbox's server is a
  ``SandboxError`` (the gateway answers 502). After it started, the client's connection
  is cut (``UpstreamAborted``): the body ends short, never silently "complete".
- A request that went out on a pooled connection the server had meanwhile closed is
  sent again once on a new one, if it is idempotent and no byte of an answer came.
- A client that goes away (noticed within ``WATCH_AFTER_S`` of the request) ends the
  exchange and closes the sandbox connection, so hung servers cannot pile up requests.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from corral.api.credentials import without_query_param
from corral.errors import SandboxError
from corral.gateway.access import Grant
from corral.gateway.headers import request_headers, response_headers
from corral.gateway.routing import Target
from corral.gateway.upstream import Connection, Pool

log = logging.getLogger("corral.gateway")

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
WATCH_AFTER_S = 0.05


class UpstreamAborted(Exception):
    """The sandbox's server failed after the response started; raised to the ASGI
    server on purpose, which then closes the client's connection."""


async def forward(
    pool: Pool,
    target: Target,
    grant: Grant,
    scope: Any,
    receive: Any,
    send: Any,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Forward one request (see the module docstring); ``extra`` headers are added to
    the response (CORS, the preview cookie)."""
    method: str = scope["method"]
    headers, chunked, length = request_headers(
        scope, target.host, target.prefix, drop_authorization=grant.drop_authorization
    )
    path = target.path
    if grant.query_token:
        base, _, query = path.partition(b"?")
        query = without_query_param(query, "token")
        path = base + b"?" + query if query else base
    first, more = b"", False
    if chunked or length:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        first, more = message.get("body", b""), bool(message.get("more_body", False))
        if chunked and not more:  # all of it is here: send it with a length
            chunked = False
            headers.append((b"content-length", str(len(first)).encode()))
    if chunked:
        headers.append((b"transfer-encoding", b"chunked"))
    payload = request_head(method, path, headers) + (_chunk(first) if chunked else first)

    address, port = grant.route.address, target.port
    conn, reused = await pool.acquire(address, port)
    exchange = _Exchange(conn, receive, uploading=more)
    try:
        conn.begin(head_only=method == "HEAD")
        conn.write(payload)
        exchange.start(chunked)
        try:
            await conn.response_head()
        except SandboxError:
            if exchange.gone:
                return
            if not (reused and not more and not conn.got_bytes and method in IDEMPOTENT):
                raise
            conn.abort()
            conn = exchange.conn = await pool.open(address, port)
            conn.begin(head_only=method == "HEAD")
            conn.write(payload)
            await conn.response_head()
        await _respond(conn, exchange, target, send, extra)
    except SandboxError:
        if exchange.gone:
            return
        raise
    finally:
        exchange.stop()
        if exchange.uploaded:
            pool.release(conn)
        else:
            conn.abort()


async def _respond(
    conn: Connection, exchange: _Exchange, target: Target, send: Any, extra: list[tuple[bytes, bytes]]
) -> None:
    start = {
        "type": "http.response.start",
        "status": conn.status,
        "headers": response_headers(conn.headers, target.prefix, extra),
    }
    if conn.done:  # the whole answer is here already
        body = await conn.read()
        await send(start)
        await send({"type": "http.response.body", "body": body})
        return
    await send(start)
    try:
        while True:
            chunk = await conn.read()
            if not chunk:
                break
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except SandboxError as exc:
        if exchange.gone:
            return
        raise cut_off(exc) from exc
    await send({"type": "http.response.body", "body": b""})


class _Exchange:
    """The client's side of one exchange while the sandbox answers: the rest of the
    request body, then a watch for the client going away."""

    def __init__(self, conn: Connection, receive: Any, *, uploading: bool) -> None:
        self.conn = conn
        self.receive = receive
        self.gone = False
        self.uploaded = not uploading
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, chunked: bool) -> None:
        if not self.uploaded:
            self._task = asyncio.create_task(self._upload(chunked))
        else:
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._watch_now)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()

    def _watch_now(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(self._watch())

    async def _upload(self, chunked: bool) -> None:
        conn = self.conn
        try:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    self._gone()
                    return
                body = message.get("body", b"")
                if body:
                    conn.write(_chunk(body) if chunked else body)
                    await conn.drain()
                if not message.get("more_body", False):
                    break
            if chunked:
                conn.write(b"0\r\n\r\n")
        except SandboxError:
            return  # the server stopped reading: its answer, or its failure, comes as the response
        self.uploaded = True
        await self._watch()

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self._gone()
                return

    def _gone(self) -> None:
        self.gone = True
        self.conn.abort(SandboxError("the client went away"))


def cut_off(exc: SandboxError) -> UpstreamAborted:
    """What ends an exchange whose sandbox failed after the response started (logged)."""
    log.info("%s, after its response started: cutting the client off", exc.message)
    return UpstreamAborted(exc.message)


def request_head(method: str, path: bytes, headers: list[tuple[bytes, bytes]], version: str = "1.1") -> bytes:
    """A request line and its header fields, as bytes on the wire."""
    lines = [method.encode("latin-1"), b" ", path, b" HTTP/", version.encode("ascii"), b"\r\n"]
    for name, value in headers:
        lines += [name, b": ", value, b"\r\n"]
    lines.append(b"\r\n")
    return b"".join(lines)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
