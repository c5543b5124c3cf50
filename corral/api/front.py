"""Every connection corral serves is read here first: the gateway's plain requests are
answered on the connection itself (``corral.gateway.fast_path``), everything else goes to
uvicorn's protocol behind it (``corral.api.behind.BehindProtocol``), which runs the
ASGI app as ever.

Why. uvicorn's protocol and the ASGI cycle cost a gateway request more CPU than the
proxying itself (measured, ``docs/benchmarks.md``: a connection through them served a
third of what a byte relay serves). Here a request the fast path takes costs one llhttp
parse, the fast path's work and two socket writes.

How a connection is read. One httptools parser reads the client's requests, bounded:

- a request head (request line and headers) larger than ``max_header_bytes``, or with
  more than ``max_headers`` fields: 431, connection closed. Bytes are counted as parsed
  and, since llhttp holds a field until its end, also as received (so one endless field
  is cut off too);
- a request head not complete ``head_timeout`` after it started (a slow loris): 408,
  connection closed;
- a connection with nothing in progress is closed after uvicorn's
  ``timeout_keep_alive`` (also a new one that sends nothing);
- bytes that are not HTTP/1.x: 400, connection closed (a failure of corral's own while
  reading a request: 500, logged); except a connection whose first read begins with
  HTTP/2's preface, which ``corral.api.h2c`` takes over for good (h2c, prior knowledge).

Then, for each request head:

- a WebSocket upgrade: the connection is handed to the protocol behind for good (the
  head written again, then every byte as it comes; uvicorn then hands it to its
  WebSocket protocol);
- a request the fast path takes (``FastPath.start``): answered here;
- any other request: written again into the protocol behind (the head as parsed, the
  body as it comes, re-chunked if it came chunked), which answers it.

Exec round trips take a turn (``corral.api.front_turns``, the server's ``turns``) before
they go behind: beyond ``max_concurrent_execs`` in flight (one while another request is
in flight behind), one waits as parsed bytes until a turn ends, so the other routes are
not queued behind a hundred execs' bodies, credentials and routing. The turn ends with
its answer. Requests to the gateway (a sandbox's own traffic, even on an exec-like path)
take no turn and do not count. While an exec waits its connection is still read (so a
client that leaves is seen, and leaves the queue) until more bytes come: those are held
too, and reading pauses.

Answers leave in request order: a request that begins while an earlier one is not yet
answered is held (its parsed pieces kept, reading paused) until that answer is
complete. Writes of one loop turn leave as one (``CoalescingTransport``); a complete
answer leaves at once.

Seams. The fast path is given by the server set-up (``front_protocol``'s ``fast_path``, from
``corral.api.server``): a connection asks it for the gateway's fast path when it is made, and
knows nothing of the app. What the front needs of uvicorn's private classes comes from
``corral.api.uvicorn_internals`` alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import httptools

from corral.api.behind import BehindProtocol, BehindTransport, CoalescingTransport
from corral.api.front_turns import FrontTurns, Other, Turn, Waiter, is_exec, turn_key
from corral.api.h2c import PREFACE, H2Connection
from corral.api.uvicorn_internals import Config, ServerState
from corral.gateway.fast_path import FastExchange, FastPath
from corral.gateway.forward import request_head

_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}
access_log = logging.getLogger("uvicorn.access")
log = logging.getLogger("corral.api")


FastPathSource = Callable[[], FastPath | None]
"""Where a connection finds the gateway's fast path when it is made: the fast path while the
gateway is open, None otherwise (before start-up, after shutdown, an app without one)."""


class _Rejected(Exception):
    """Stops the parser after the connection answered the client itself."""


class FrontProtocol(asyncio.Protocol):
    """One connection (see the module docstring). Built by uvicorn, with uvicorn's
    arguments; its limits and its fast path are the class's, given by ``front_protocol``."""

    head_timeout = 30.0
    max_header_bytes = 64 * 1024
    max_headers = 100
    turns: FrontTurns | None = None  # exec round trips in flight, shared by the server's connections

    @staticmethod
    def fast_path_source() -> FastPath | None:
        """The fast path a new connection answers with (``front_protocol``'s ``fast_path``): none."""
        return None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.raw: asyncio.Transport | None = None
        self.out: CoalescingTransport | None = None
        self.fast_path: FastPath | None = None
        self.behind: BehindProtocol | None = None  # made for the first request it answers
        self.delegate: asyncio.Protocol | None = None  # owns the connection after an upgrade
        self.write_paused = False
        self.exchange: FastExchange | None = None  # the fast path's request in progress
        self.pending_behind = 0  # requests given to the protocol behind, not yet answered
        self.closing = False  # graceful shutdown: close once the answer in progress is done
        self._client: tuple[str, int] | None = None
        self._scheme = "http"
        self._held: deque[tuple[Callable[..., None], tuple[Any, ...]]] | None = None
        self._pausers: set[str] = set()
        self._in_message = False
        self._in_head = False
        self._raw_bytes = 0  # received while in a head, after the read that began it
        self._head_bytes = 0  # of the request line and header fields, as parsed
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunked = False  # the request behind came chunked
        self._websocket = False
        self._version = "1.1"
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None
        self._rejected = False
        self._fresh = True  # nothing read yet: HTTP/2's preface may come (corral.api.h2c)
        self._turn: Turn | None = None  # the exec turn of the request behind, if it took one
        self._waiter: Waiter | None = None  # the request waits for an exec turn
        self._other: Other | None = None  # the request behind is not an exec: counted in turns
        self._lost = False

    # ---- the transport's callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self.raw = raw
        self.out = CoalescingTransport(raw, self.loop)
        self.server_state.connections.add(cast(Any, self))
        peer = raw.get_extra_info("peername")
        self._client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self._scheme = "https" if raw.get_extra_info("sslcontext") else "http"
        self.fast_path = self.fast_path_source()
        self._arm(self.config.timeout_keep_alive, self._idle)

    def data_received(self, data: bytes) -> None:
        if self.delegate is not None:
            self.delegate.data_received(data)
            return
        if self._rejected or self.out is None or self.out.is_closing():
            return  # answered and closing: nothing more is read
        if self._fresh:
            self._fresh = False
            if data.startswith(PREFACE):
                self._h2c(data)
                return
        if self._in_head:
            self._raw_bytes += len(data)
            if self._raw_bytes > self.max_header_bytes:
                self._reject(431, "request head too large")
                return
        elif not self._in_message and self._held is None:
            self._disarm()  # the keep-alive wait is over
        if self._waiter is not None:
            self.pause_reading("turn")  # held now: at most this read's bytes more while waiting
        try:
            self.parser.feed_data(data)
        except _Rejected:
            return
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[int(exc.args[0]) :])
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what a callback of ours raised, if one did
            if self._rejected:
                return
            if cause is not None:
                log.error("answering a request failed", exc_info=cause)
                self._reject(500, "internal error")
            else:
                self._reject(400, "Invalid HTTP request received.")

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(cast(Any, self))
        self._lost = True
        if self._waiter is not None and self.turns is not None:
            self.turns.forget(self._waiter)
            self._waiter = None
        self._end_turn()
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.exchange is not None:
            self.exchange.client_gone()
            self.exchange = None
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.inner is not None:
            self.inner.resume_writing()
        if self.exchange is not None:
            self.exchange.writable()

    @property
    def inner(self) -> asyncio.Protocol | None:
        """The protocol that hears the transport's events with us: after an upgrade the
        one that took the connection over, else the one behind (if made)."""
        return self.delegate if self.delegate is not None else self.behind

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: close now if idle, else after the answer."""
        if self.delegate is not None:
            return  # uvicorn's WebSocket protocol is a connection of its own
        if self.pending_behind and self.behind is not None:
            self.behind.shutdown()  # it closes after its answer
        if self._busy() or self._waiter is not None:
            self.closing = True
        else:
            self.close()

    # ---- the parser's callbacks (held while an earlier answer is in progress) ---------

    def on_message_begin(self) -> None:
        if self._held is None and (self._busy() or self._in_message):
            self._held = deque()
            self.pause_reading("held")
        if self._held is None:
            self._begin()
        else:
            self._held.append((self._begin, ()))

    def on_url(self, url: bytes) -> None:
        if self._held is None:
            self._on_url(url)
        else:
            self._held.append((self._on_url, (url,)))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._held is None:
            self._on_header(name, value)
        else:
            self._held.append((self._on_header, (name, value)))

    def on_headers_complete(self) -> None:
        parser = self.parser
        args = (
            parser.get_method(),
            parser.get_http_version(),
            parser.should_keep_alive(),
            parser.should_upgrade(),
        )
        if self._held is None:
            self._on_headers_complete(*args)
        else:
            self._held.append((self._on_headers_complete, args))

    def on_body(self, body: bytes) -> None:
        if self._held is None:
            self._on_body(body)
        else:
            self._held.append((self._on_body, (body,)))

    def on_message_complete(self) -> None:
        if self._held is None:
            self._on_message_complete()
        else:
            self._held.append((self._on_message_complete, ()))

    # ---- one request ------------------------------------------------------------------

    def _begin(self) -> None:
        self._in_message = True
        self._in_head = True
        self._raw_bytes = 0
        self._head_bytes = 0
        self._url = b""
        self._headers = []
        self._chunked = False
        self._websocket = False
        self._arm(self.head_timeout, self._too_slow)

    def _on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._reject(431, "request line too long")
            raise _Rejected
        self._url += url

    def _on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if len(self._headers) >= self.max_headers:
            self._reject(431, f"more than {self.max_headers} request headers")
            raise _Rejected
        if self._head_bytes > self.max_header_bytes:
            self._reject(431, "request head too large")
            raise _Rejected
        self._headers.append((name.lower(), value))

    def _on_headers_complete(
        self, method: bytes, version: str, keep_alive: bool, upgrade_asked: bool
    ) -> None:
        self._in_head = False
        self._disarm()
        headers = self._headers
        upgrade = b""
        for name, value in headers:
            if name == b"upgrade":
                upgrade = value.lower()
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
        self._version = version
        if upgrade == b"websocket" and upgrade_asked:
            self._websocket = True  # the parser stops with HttpParserUpgrade: see _upgrade
            return
        gateway = False  # the gateway's request that its fast path left to the app
        if self.fast_path is not None and self._url.startswith(b"/"):
            path, _, query = self._url.partition(b"?")
            scope = {
                "type": "http",
                "method": method.decode("ascii"),
                "raw_path": path,
                "path": path.decode("latin-1"),
                "query_string": query,
                "headers": headers,
                "client": self._client,
                "scheme": self._scheme,
            }
            self.exchange = self.fast_path.start(scope, self, keep_alive)
            if self.exchange is not None:
                return
            gateway = self.turns is not None and self.fast_path.router.match(scope) is not None
        turns = None if gateway else self.turns  # a sandbox's own traffic: no turn, not counted
        if turns is not None and self._turn is None and is_exec(method, self._url):
            asked = turns.ask(turn_key(headers, self._client), self._granted, self.loop)
            if isinstance(asked, Waiter):  # this request and what follows it wait: see _granted
                self._waiter = asked
                if self._held is None:
                    self._held = deque()
                self._held.appendleft(
                    (self._on_headers_complete, (method, version, keep_alive, upgrade_asked))
                )
                return  # reading goes on (a client that leaves is seen) until more comes: data_received
            self._turn = asked
        elif turns is not None and self._turn is None:
            self._other = turns.other(self.loop)
        self.pending_behind += 1
        self._behind().data_received(self._head(method))

    def _on_body(self, body: bytes) -> None:
        if self.exchange is None and body:
            self._behind().data_received(b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body)

    def _on_message_complete(self) -> None:
        self._in_message = False
        if self.exchange is None and self._chunked:
            self._behind().data_received(b"0\r\n\r\n")
        self._settled()

    def _head(self, method: bytes) -> bytes:
        """The request's head written again, for the protocol behind."""
        return request_head(method.decode("latin-1"), self._url, self._headers, self._version)

    def _upgrade(self, rest: bytes) -> None:
        """After a head asking for an upgrade. Other than to WebSocket, the request was
        answered as a plain one: reading goes on. A WebSocket handshake: the protocol
        behind owns the connection from now on (uvicorn gives it to its WebSocket
        protocol)."""
        if not self._websocket:
            if rest:
                self.data_received(rest)
            return
        if self._held is not None or self._busy():
            self._reject(400, "a WebSocket handshake must wait for the answers before it")
            return
        self._in_message = False
        self._disarm()
        behind = self._behind()
        self.delegate = behind
        self.server_state.connections.discard(cast(Any, self))  # uvicorn's WebSocket protocol counts it
        behind.data_received(self._head(self.parser.get_method()) + rest)

    def _h2c(self, data: bytes) -> None:
        """HTTP/2 with prior knowledge: ``H2Connection`` owns the connection from now on."""
        self._disarm()
        self.server_state.connections.discard(cast(Any, self))  # it counts itself
        connection = H2Connection(self.config.loaded_app, self.config, self.app_state, self.server_state)
        self.delegate = connection
        assert self.raw is not None
        connection.connection_made(self.raw)
        connection.data_received(data)

    def _behind(self) -> BehindProtocol:
        if self.behind is None:
            protocol = BehindProtocol(
                config=self.config, server_state=self.server_state, app_state=self.app_state, _loop=self.loop
            )
            protocol.front = self
            protocol.connection_made(cast(asyncio.Transport, BehindTransport(self)))
            self.behind = protocol
        return self.behind

    # ---- answers ------------------------------------------------------------------------

    def exchange_finished(self, exchange: FastExchange) -> None:
        self.server_state.total_requests += 1
        if self.config.access_log:
            access_log.info(
                '%s - "%s %s HTTP/%s" %d',
                f"{self._client[0]}:{self._client[1]}" if self._client else "-",
                exchange.method,
                self._url.decode("latin-1"),
                self._version,
                exchange.status,
            )
        if self.exchange is exchange:
            self.exchange = None
        self._settled()

    def answered(self) -> None:
        """The protocol behind completed an answer."""
        self.pending_behind -= 1
        self._end_turn()
        self._settled()

    def _granted(self, turn: Turn) -> None:
        """The request waiting for an exec turn has it: it goes on (``_replay``)."""
        self._waiter = None
        if self._lost or self._rejected:
            turn.release()
            return
        self._turn = turn
        self.resume_reading("turn")
        self._replay()

    def _end_turn(self) -> None:
        turn, self._turn = self._turn, None
        if turn is not None:
            turn.release()
        other, self._other = self._other, None
        if other is not None:
            other.end()

    def _settled(self) -> None:
        """After a request or an answer ended: the held request goes on, or the
        connection waits for the next one (or closes, when shutting down)."""
        if self._busy() or self._in_message:
            return
        if self._held is not None:
            self.loop.call_soon(self._replay)
        elif self.closing:
            self.close()
        elif self.delegate is None and not self._rejected:
            self._arm(self.config.timeout_keep_alive, self._idle)

    def _replay(self) -> None:
        held = self._held
        while held and not self._rejected and self._waiter is None:
            handler, args = held[0]
            if handler == self._begin and (self._busy() or self._in_message):
                return  # the next request waits for this one's answer
            held.popleft()
            try:
                handler(*args)
            except _Rejected:
                return
        if self._waiter is not None:
            return  # a request waits for an exec turn (it put itself back first)
        self._held = None
        self.resume_reading("held")
        self._settled()

    def _busy(self) -> bool:
        return self.exchange is not None or self.pending_behind > 0

    # ---- the client's side --------------------------------------------------------------

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.server_state.default_headers

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write; it leaves at the end of the loop's turn (or at ``flush``)."""
        assert self.out is not None
        self.out.write(data)

    def send(self, data: bytes) -> None:
        """Write and send now (after anything written before)."""
        assert self.out is not None
        self.out.send(data)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()

    def close(self) -> None:
        if self.out is not None and not self.out.is_closing():
            self.out.close()

    def pause_reading(self, reason: str) -> None:
        if not self._pausers and self.raw is not None and not self.raw.is_closing():
            self.raw.pause_reading()
        self._pausers.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pausers:
            return
        self._pausers.discard(reason)
        if not self._pausers and self.raw is not None and not self.raw.is_closing():
            self.raw.resume_reading()

    # ---- timers ---------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` in ``delay`` s unless disarmed or armed again first. One
        timer serves every deadline: it is moved only when a deadline comes earlier
        (never per request in a stream of keep-alive requests)."""
        self._deadline = self.loop.time() + delay
        self._on_deadline = callback
        if self._timer is not None and self._timer_at <= self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = self._deadline
        self._timer = self.loop.call_at(self._deadline, self._tick)

    def _disarm(self) -> None:
        self._on_deadline = None  # a pending timer finds nothing to do

    def _tick(self) -> None:
        self._timer = None
        callback = self._on_deadline
        if callback is None:
            return
        if self.loop.time() < self._deadline:
            self._timer_at = self._deadline
            self._timer = self.loop.call_at(self._deadline, self._tick)
            return
        self._on_deadline = None
        callback()

    def _idle(self) -> None:
        if not self._busy() and not self._in_message and self.delegate is None:
            self.close()

    def _too_slow(self) -> None:
        if self._in_head and not self._rejected:
            self._reject(408, f"request head not complete within {self.head_timeout:g} s")

    def _reject(self, status: int, message: str) -> None:
        self._rejected = True
        self._disarm()
        body = message.encode()
        self.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%b" % (status, _REASONS[status], len(body), body)
        )
        self.close()


def front_protocol(
    head_timeout: float,
    max_header_bytes: int,
    max_headers: int,
    fast_path: FastPathSource,
    turns: FrontTurns | None = None,
) -> type[FrontProtocol]:
    """The protocol class with these limits, whose connections answer what ``fast_path()``
    takes and share ``turns`` for their exec round trips (for uvicorn's ``http`` option)."""
    return type(
        "FrontProtocol",
        (FrontProtocol,),
        {
            "head_timeout": head_timeout,
            "max_header_bytes": max_header_bytes,
            "max_headers": max_headers,
            "fast_path_source": staticmethod(fast_path),
            "turns": turns,
        },
    )
