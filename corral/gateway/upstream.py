"""HTTP/1.1 client connections to servers inside sandboxes, kept in a pool.

A lean forwarder on asyncio protocols and ``httptools`` (llhttp, the parser uvicorn
already uses): measured on the same machine, an httpx ``AsyncClient`` pool added
several milliseconds per request under concurrency, this adds tens of microseconds.

Contracts (every failure is a ``SandboxError``, which the gateway answers with 502):
- ``Pool.acquire`` reuses an idle connection to the same address and port, or opens
  one within ``connect_timeout``. Refused: "nothing is listening".
- A response head must fit ``max_header_bytes`` and ``max_headers`` and be complete
  within ``head_timeout`` of its first byte; anything llhttp cannot parse is an error.
  No wait for the server may exceed ``read_timeout`` of silence (time spent paused
  because our client is slow does not count).
- The body is handed over in chunks as they arrive; reading pauses (TCP backpressure)
  while more than ``HIGH_WATER`` bytes wait, so a never-ending body costs no memory.
- A connection goes back to the pool only after a complete exchange that the server
  keeps alive; ``abort`` closes it. Idle connections are dropped after ``idle_ttl``.
- Callers that do not await (``corral.gateway.fast_path``) set ``listener``, called after
  each change of the exchange (head, body, end, failure; once per read, after parsing
  it, never from within the parser), and use ``take``, ``hold`` and ``Pool.take_idle``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from corral.errors import SandboxError

HIGH_WATER = 256 * 1024
NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True)
class UpstreamLimits:
    connect_timeout: float = 5.0
    read_timeout: float = 3600.0
    head_timeout: float = 30.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_idle_per_origin: int = 64
    idle_ttl: float = 30.0


class _Abort(Exception):
    """Raised inside parser callbacks to stop parsing."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; one exchange at a time (``begin`` starts the next)."""

    def __init__(self, origin: tuple[str, int], limits: UpstreamLimits) -> None:
        self.origin = origin
        self.limits = limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.pool: Pool | None = None  # while parked in a pool's idle list
        self.listener: Callable[[], None] | None = None  # see the module docstring
        self._feeding = False  # in data_received: the listener waits for its end
        self._changed = False
        self._parser: httptools.HttpResponseParser | None = None
        self._exchange_done = True
        self._drain: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset(head_only=False)

    def _reset(self, head_only: bool) -> None:
        self.listener = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.got_bytes = False
        self._head_only = head_only
        self._framed = False
        self._head_bytes = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._error: SandboxError | None = None
        self._last_read = 0.0
        self._head_deadline = 0.0

    # ---- protocol callbacks ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        self._feeding = True
        try:
            self._received(data)
        finally:
            self._feeding = False
        if self._changed:
            self._changed = False
            if self.listener is not None:
                self.listener()

    def _received(self, data: bytes) -> None:
        if self._parser is None or self.done:  # nothing was asked: the server is confused
            self._fail("sent data it was not asked for")
            return
        self._last_read = self.loop.time()
        if not self.got_bytes:
            self.got_bytes = True
            self._head_deadline = self._last_read + self.limits.head_timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(
                str(cause) if isinstance(cause, _Abort) else "sent a response that is not valid HTTP/1.1"
            )
            return
        except httptools.HttpParserUpgrade:
            self._fail("switched protocols on a plain HTTP request")
            return
        if not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._fail(f"sent a response head larger than {self.limits.max_header_bytes} bytes")

    def eof_received(self) -> bool:
        self._finish_at_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool is not None:
            self.pool.discard(self)
        self._finish_at_eof()
        if not self.done:
            self._fail("closed the connection before the response ended")
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._cancel_timer()

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ---- parser callbacks ------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # trailers of a chunked body: not forwarded
            return
        if len(self.headers) >= self.limits.max_headers:
            raise _Abort(f"sent more than {self.limits.max_headers} response headers")
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True
        self.headers.append((lowered, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): wait for the real one
            self.headers = []
            return
        self.status = status
        self.head_done = True
        if self._head_only or status in NO_BODY_STATUS:
            self._complete()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER:
            self.hold(True)
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:
            self._complete()
            self._wake()

    # ---- the exchange ----------------------------------------------------------------

    def begin(self, head_only: bool) -> None:
        """Start an exchange; ``head_only`` for HEAD requests (no body will come)."""
        self._reset(head_only)
        self._parser = httptools.HttpResponseParser(self)
        self._exchange_done = False
        self._last_read = self.loop.time()
        if self._timer is None:
            self._arm()

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise self._error or SandboxError(f"{self._who} closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the server is not reading what we wrote."""
        if self._drain is not None and not self._drain.done():
            await self._drain
        if self.closed and not self.done:
            raise self._error or SandboxError(f"{self._who} closed the connection")

    async def response_head(self) -> None:
        """Wait for the status and headers (``status``, ``headers``)."""
        while not self.head_done:
            await self._wait()

    async def read(self) -> bytes:
        """The body that has arrived since the last call; b"" once it is complete."""
        while not self._chunks:
            if self.done:
                return b""
            await self._wait()
        return self.take()

    def take(self) -> bytes:
        """The body that has arrived since the last call, without waiting (maybe b"")."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        self.hold(False)
        return data

    def hold(self, paused: bool) -> None:
        """Pause (or resume) reading from the server while our client reads slowly, or
        while more than ``HIGH_WATER`` waits to be read; the time held does not count as
        the server's silence."""
        if paused == self._paused or self.transport is None:
            return
        self._paused = paused
        self._last_read = self.loop.time()
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def abort(self, error: SandboxError | None = None) -> None:
        """Give up on the exchange and close the connection."""
        if error is not None and self._error is None:
            self._error = error
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()
        self._cancel_timer()

    def park(self) -> None:
        """Between exchanges: any byte the server sends now is an error."""
        self._parser = None
        self.listener = None
        self.idle_since = time.monotonic()

    @property
    def failure(self) -> SandboxError | None:
        """Why the exchange failed, once it did."""
        return self._error

    @property
    def reusable(self) -> bool:
        return self.done and self.keep_alive and not self.closed and not self._chunks

    # ---- internals -------------------------------------------------------------------

    @property
    def _interval(self) -> float:
        return min(1.0, self.limits.head_timeout / 4, self.limits.read_timeout / 4)

    @property
    def _who(self) -> str:
        return f"the server on port {self.origin[1]}"

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.listener is not None:
            if self._feeding:
                self._changed = True
            else:
                self.listener()

    def _complete(self) -> None:
        self.done = True
        self._exchange_done = True
        assert self._parser is not None
        self.keep_alive = self._framed or self._head_only or self.status in NO_BODY_STATUS
        self.keep_alive = self.keep_alive and self._parser.should_keep_alive()
        # the timer stays: its next tick sees the exchange done and stops (no timer made
        # and cancelled per request)

    def _finish_at_eof(self) -> None:
        """A body without length or chunking ends when the server closes."""
        if self.head_done and not self.done and not self._framed and self._error is None:
            self._complete()
            self.keep_alive = False
            self._wake()

    def _fail(self, what: str) -> None:
        if self._error is None and not self.done:
            self._error = SandboxError(f"{self._who} {what}")
        self.abort()

    def _arm(self) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(self._interval, self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        """Once a second during an exchange: enforce the read and head timeouts."""
        self._timer = None
        if self._exchange_done or self.closed:
            return
        now = self.loop.time()
        if self.got_bytes and not self.head_done and now > self._head_deadline:
            self._fail(f"did not finish its response head within {self.limits.head_timeout:g} s")
            return
        if not self._paused and now - self._last_read > self.limits.read_timeout:
            self._fail(f"sent nothing for {self.limits.read_timeout:g} s")
            return
        self._timer = self.loop.call_later(self._interval, self._tick)


class Pool:
    """Connections per (address, port); at most ``max_idle_per_origin`` idle ones each."""

    def __init__(self, limits: UpstreamLimits) -> None:
        self.limits = limits
        self._idle: dict[tuple[str, int], list[Connection]] = {}

    async def acquire(self, address: str, port: int) -> tuple[Connection, bool]:
        """A connection, and whether it was reused (a reused one may turn out closed)."""
        conn = self.take_idle(address, port)
        if conn is not None:
            return conn, True
        return await self.open(address, port), False

    def take_idle(self, address: str, port: int) -> Connection | None:
        """An idle connection to reuse, or None (nothing is opened)."""
        origin = (address, port)
        idle = self._idle.get(origin)
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                conn.pool = None
                if not conn.closed and now - conn.idle_since < self.limits.idle_ttl:
                    return conn
                conn.abort()
            del self._idle[origin]
        return None

    async def open(self, address: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        origin = (address, port)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(origin, self.limits), address, port),
                self.limits.connect_timeout,
            )
        except TimeoutError as exc:
            raise SandboxError(
                f"port {port} did not accept a connection within {self.limits.connect_timeout:g} s"
            ) from exc
        except ConnectionRefusedError as exc:
            raise SandboxError(f"nothing is listening on port {port}") from exc
        except OSError as exc:
            raise SandboxError(f"cannot connect to port {port}: {exc.strerror or exc}") from exc
        return conn

    def release(self, conn: Connection) -> None:
        """Keep ``conn`` for reuse if it can be reused; close it otherwise."""
        if not conn.reusable:
            conn.abort()
            return
        idle = self._idle.setdefault(conn.origin, [])
        expired = time.monotonic() - self.limits.idle_ttl
        while idle and idle[0].idle_since < expired:  # oldest first
            stale = idle.pop(0)
            stale.pool = None
            stale.abort()
        if len(idle) >= self.limits.max_idle_per_origin:
            conn.abort()
            return
        conn.park()
        conn.pool = self
        idle.append(conn)

    def discard(self, conn: Connection) -> None:
        """Forget an idle connection the server closed."""
        conn.pool = None
        idle = self._idle.get(conn.origin)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.origin]

    def close(self) -> None:
        idle_lists = list(self._idle.values())
        self._idle.clear()
        for idle in idle_lists:
            for conn in idle:
                conn.pool = None
                conn.abort()
