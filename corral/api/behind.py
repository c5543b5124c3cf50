"""uvicorn's httptools protocol as corral runs it: behind ``corral.api.front``, which
reads every connection first (``BehindProtocol``, writing through ``BehindTransport``),
with the connection's writes coalesced (``CoalescingTransport``).

``BehindProtocol`` reads only what the front writes into it: request heads the front
parsed and bounded (size, field count, time; see ``corral.api.front``) written again,
and their bodies. So it keeps no time of its own between requests (the front closes an
idle connection), it is not one of uvicorn's connections (the front is: uvicorn's
graceful shutdown asks the front), and each answer it completes is reported to the
front (``FrontProtocol.answered``), which serves requests in order.

Coalesced writes. uvicorn writes a response's head and each body message to the socket
as it gets them: two system calls for the smallest answer. ``CoalescingTransport``
sends the writes made during one turn of the event loop as one, at the end of that turn
(nothing waits for more data, so nothing is delayed: a stream still leaves piece by
piece as the app yields). A complete response leaves at once (``flush``), not at the
end of the turn. ``close`` sends what is pending first; everything else is the real
transport's.

It relies on uvicorn's ``HttpToolsProtocol`` (``connections``,
``timeout_keep_alive_task``, ``on_response_complete``, the WebSocket hand-over by
``set_protocol``), imported from ``corral.api.uvicorn_internals``, whose test fails
naming what a uvicorn upgrade removed; ``tests/unit/gateway/test_behind.py`` tests the
behaviour.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from corral.api.uvicorn_internals import HttpToolsProtocol

if TYPE_CHECKING:
    from corral.api.front import FrontProtocol


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

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def send(self, data: bytes) -> None:
        """``data`` out now, after what is pending."""
        if self._pending:
            self._pending.append(data)
            self.flush()
        elif not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BehindProtocol(HttpToolsProtocol):
    """uvicorn's protocol behind the front (see the module docstring)."""

    front: FrontProtocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.connections.discard(self)  # the front is the connection uvicorn knows

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # the front keeps the connection's time
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        self.front.flush()  # the response is whole: it leaves now
        self.front.answered()


class BehindTransport:
    """The transport the protocol behind writes to: the connection's own, with reading
    paused for its reasons among the front's, and an upgrade handing the connection over."""

    def __init__(self, front: FrontProtocol) -> None:
        self._front = front
        assert front.raw is not None
        self._raw = front.raw

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._front.write(data)  # the coalescing transport takes its own copy

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def close(self) -> None:
        self._front.close()

    def pause_reading(self) -> None:
        self._front.pause_reading("behind")

    def resume_reading(self) -> None:
        self._front.resume_reading("behind")

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._front.delegate = cast(asyncio.Protocol, protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return cast(asyncio.BaseProtocol, self._front.inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)
