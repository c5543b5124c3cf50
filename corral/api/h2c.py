"""HTTP/2 over cleartext with prior knowledge (h2c), for clients that speak it to an
``http://`` URL (gRPC-style and Connect clients configured for HTTP/2; the ``e2b`` SDK
does when told to). ``corral.api.front`` hands a connection over to ``H2Connection``
when its first bytes are HTTP/2's connection preface; nothing else changes for
HTTP/1.1 connections (one comparison of their first bytes).

The framing, HPACK, flow control and the protocol's checks are the ``h2`` library's;
this module only runs each stream as an ASGI request of the app uvicorn serves (the
same scope uvicorn would build, ``http_version`` "2"), answers with what the app sends,
and keeps its bounds:

- at most ``MAX_STREAMS`` streams at once (``SETTINGS_MAX_CONCURRENT_STREAMS``), header
  lists of at most ``MAX_HEADER_LIST`` bytes;
- a request body is acknowledged (its flow-control window given back) only as the app
  reads it, so a client sends no more than a window ahead of the app; an answer waits
  for the client's window and for the socket to drain (``pause_writing``) before each
  piece;
- a connection with no stream open for ``config.timeout_keep_alive`` seconds is closed
  with GOAWAY, and so is each at uvicorn's graceful shutdown, once its streams are done;
- a protocol error closes the connection with GOAWAY (the library's verdict); an app
  that fails before answering resets its stream with INTERNAL_ERROR.

No server push, no ``Upgrade: h2c`` from HTTP/1.1 (prior knowledge only), no trailers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

log = logging.getLogger("corral.api.h2c")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_STREAMS = 100
MAX_HEADER_LIST = 64 * 1024


@dataclass
class _Stream:
    """One request: its scope, the body not yet read, and the waits of its task."""

    scope: dict[str, Any]
    body: deque[bytes] = field(default_factory=deque)
    ended: bool = False  # the client sent END_STREAM
    reset: bool = False  # the client reset it, or the connection is gone
    readable: asyncio.Event = field(default_factory=asyncio.Event)
    writable: asyncio.Event = field(default_factory=asyncio.Event)
    answered: bool = False  # the response's headers went out
    task: asyncio.Task[None] | None = None


class H2Connection(asyncio.Protocol):
    """One h2c connection, made by ``FrontProtocol`` when the preface came; it gets the
    transport and the first bytes from there."""

    def __init__(self, app: Any, config: Any, app_state: dict[str, Any], server_state: Any) -> None:
        self.app = app
        self.config = config
        self.app_state = app_state
        self.server_state = server_state
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.streams: dict[int, _Stream] = {}
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.closing = False
        self.can_write = asyncio.Event()
        self.can_write.set()
        self._idle: asyncio.TimerHandle | None = None

    # ---- the transport's callbacks ----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        local = self.transport.get_extra_info("sockname")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
        self.server = (str(local[0]), int(local[1])) if isinstance(local, tuple) and len(local) >= 2 else None
        self.server_state.connections.add(self)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            },
        )
        self.h2.initiate_connection()
        self._flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("h2c connection closed: %s", exc)
            self._flush()
            self._close()
            return
        for event in events:
            self._on(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        for stream in self.streams.values():
            stream.reset = True
            stream.readable.set()
            stream.writable.set()
        self.can_write.set()
        self.transport = None

    def pause_writing(self) -> None:
        self.can_write.clear()  # the answers' next pieces wait for the socket to drain

    def resume_writing(self) -> None:
        self.can_write.set()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: GOAWAY, and close once no stream is open."""
        self.closing = True
        self.h2.close_connection()
        self._flush()
        if not self.streams:
            self._close()

    # ---- h2's events --------------------------------------------------------------------

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._start(event.stream_id, event.headers or [], event.stream_ended is not None)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                return
            stream.body.append(event.data or b"")
            if event.flow_controlled_length > len(event.data or b""):  # padding: given back now
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length - len(event.data or b""), event.stream_id
                )
            stream.readable.set()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.ended = True
                stream.readable.set()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.reset = True
                stream.readable.set()
                stream.writable.set()
        elif isinstance(event, h2.events.WindowUpdated):
            targets = self.streams.values() if event.stream_id == 0 else [self.streams.get(event.stream_id)]
            for stream in targets:
                if stream is not None:
                    stream.writable.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._close()

    def _start(self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool) -> None:
        pseudo = {name: value for name, value in headers if name.startswith(b":")}
        path = pseudo.get(b":path", b"/")
        raw_path, _, query = path.partition(b"?")
        plain = [(name, value) for name, value in headers if not name.startswith(b":")]
        if b":authority" in pseudo and not any(name == b"host" for name, _ in plain):
            plain.insert(0, (b"host", pseudo[b":authority"]))
        root = self.config.root_path or ""
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "2",
            "server": self.server,
            "client": self.client,
            "scheme": pseudo.get(b":scheme", b"http").decode("latin-1"),
            "method": pseudo.get(b":method", b"GET").decode("latin-1"),
            "root_path": root,
            "path": root + raw_path.decode("utf-8", "surrogateescape"),
            "raw_path": root.encode("ascii") + raw_path,
            "query_string": query,
            "headers": plain,
            "state": self.app_state.copy(),
        }
        stream = _Stream(scope, ended=ended)
        self.streams[stream_id] = stream
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        stream.task = asyncio.get_running_loop().create_task(self._run(stream_id, stream))

    # ---- one stream's ASGI call -------------------------------------------------------

    async def _run(self, stream_id: int, stream: _Stream) -> None:
        async def receive() -> dict[str, Any]:
            while not stream.body and not stream.ended and not stream.reset:
                stream.readable.clear()
                await stream.readable.wait()
            if stream.reset:
                return {"type": "http.disconnect"}
            if stream.body:
                chunk = stream.body.popleft()
                if chunk and self.transport is not None:
                    self.h2.acknowledge_received_data(len(chunk), stream_id)
                    self._flush()
                return {
                    "type": "http.request",
                    "body": chunk,
                    "more_body": bool(stream.body) or not stream.ended,
                }
            while not stream.reset:  # the whole body read: what is left to hear is its end
                stream.readable.clear()
                await stream.readable.wait()
            return {"type": "http.disconnect"}

        status: list[int] = []
        response_headers: list[tuple[bytes, bytes]] = []

        async def send(message: dict[str, Any]) -> None:
            if stream.reset or self.transport is None:
                return
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
                response_headers.extend(
                    (bytes(k).lower(), bytes(v))
                    for k, v in message.get("headers", [])
                    if bytes(k).lower() not in (b"connection", b"transfer-encoding", b"keep-alive")
                )
            elif message["type"] == "http.response.body":
                more = bool(message.get("more_body", False))
                if not stream.answered:
                    stream.answered = True
                    self.h2.send_headers(
                        stream_id, [(b":status", str(status[0]).encode()), *response_headers]
                    )
                    self._flush()
                await self._send_data(stream_id, stream, bytes(message.get("body", b"")), end=not more)

        try:
            await self.app(stream.scope, receive, send)
            if not stream.reset and self.transport is not None and not stream.answered:
                self._reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except Exception:
            log.exception("an h2c request failed")
            if not stream.reset and self.transport is not None:
                self._reset(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        finally:
            self.streams.pop(stream_id, None)
            if not self.streams:
                if self.closing:
                    self._close()
                else:
                    self._arm_idle()

    async def _send_data(self, stream_id: int, stream: _Stream, data: bytes, end: bool) -> None:
        view = memoryview(data)
        while view and not stream.reset and self.transport is not None:
            if not self.can_write.is_set():
                await self.can_write.wait()
                continue
            window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
            if window <= 0:
                stream.writable.clear()
                await stream.writable.wait()
                continue
            self.h2.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            self._flush()
        if end and not stream.reset and self.transport is not None:
            self.h2.end_stream(stream_id)
            self._flush()

    # ---- helpers ------------------------------------------------------------------------

    def _reset(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _arm_idle(self) -> None:
        if self._idle is None and self.transport is not None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(self.config.timeout_keep_alive, self.shutdown)

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
