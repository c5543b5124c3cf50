"""The HTTP protocol corral serves with: uvicorn's httptools protocol, bounded, with its
writes coalesced.

Bounds. uvicorn bounds request heads only with h11 (``h11_max_incomplete_event_size``),
which is several times slower than httptools, and bounds no request head in time. So
corral runs httptools with this subclass (``http_protocol(...)`` gives the class
uvicorn's ``http`` option takes):

- a request head (request line and headers) larger than ``max_header_bytes``, or with
  more than ``max_headers`` fields: 431, connection closed. Bytes are counted as parsed
  and, since llhttp holds a field until its end, also as received (so one endless field
  is cut off too);
- a request head not complete ``head_timeout`` after it started (a slow loris): 408,
  connection closed;
- a new connection that sends nothing is closed after ``timeout_keep_alive``, like an
  idle kept-alive one (uvicorn starts that timer only after a first response).

Coalesced writes. uvicorn writes a response's head and each body message to the socket
as it gets them: two system calls for the smallest answer. Here the writes made during
one turn of the event loop go out as one, at the end of that turn (nothing waits for
more data, so nothing is delayed: a stream still leaves piece by piece as the app
yields). Measured on the gateway's small answers: about a fifth more requests/s. A
response that is complete leaves at once (``on_response_complete``), not at the end of
the turn.
``close`` sends what is pending first; everything else is the real transport's.

It relies on uvicorn's ``HttpToolsProtocol`` (``self.transport``, ``on_message_begin``,
``on_url``, ``on_header``, ``on_headers_complete``, ``send_400_response``); the tests in
``tests/unit/gateway/test_protocol.py`` fail if a uvicorn upgrade changes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class _Rejected(Exception):
    """Stops the parser after the protocol answered the client itself."""


class CoalescingTransport:
    """A transport whose writes within one loop turn leave as one (see above)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CorralHttpProtocol(HttpToolsProtocol):
    head_timeout = 30.0
    max_header_bytes = 64 * 1024
    max_headers = 100

    _in_head = False
    _rejected = False
    _raw_bytes = 0  # received while in a head, after the read that began it
    _head_bytes = 0  # of the request line and header fields, as parsed
    _header_count = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, CoalescingTransport(transport, self.loop))
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        if self._in_head:
            self._raw_bytes += len(data)
            if self._raw_bytes > self.max_header_bytes:
                self._reject(431, "request head too large")
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._raw_bytes = 0
        self._head_bytes = 0
        self._header_count = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._reject(431, "request line too long")
            raise _Rejected
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._header_count > self.max_headers:
            self._reject(431, f"more than {self.max_headers} request headers")
            raise _Rejected
        if self._head_bytes > self.max_header_bytes:
            self._reject(431, "request head too large")
            raise _Rejected
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # The response is whole: nothing more can join it, so it leaves now rather than
        # at the end of the loop's turn (one turn less of latency per request).
        cast(CoalescingTransport, self.transport).flush()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._rejected:  # else the client already has our answer
            super().send_400_response(msg)

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self._rejected:
            self._reject(408, f"request head not complete within {self.head_timeout:g} s")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _reject(self, status: int, message: str) -> None:
        self._rejected = True
        self._cancel_head_timer()
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %b\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%b" % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()


def http_protocol(head_timeout: float, max_header_bytes: int, max_headers: int) -> type[CorralHttpProtocol]:
    """The protocol class with these limits (for uvicorn's ``http`` option)."""
    return type(
        "CorralHttpProtocol",
        (CorralHttpProtocol,),
        {"head_timeout": head_timeout, "max_header_bytes": max_header_bytes, "max_headers": max_headers},
    )
