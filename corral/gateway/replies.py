"""Answers the gateway gives itself: errors in its envelope (``corral.gateway.errors``),
redirects, and preflights.

On a WebSocket not yet accepted, an answer is sent as an HTTP response (the WebSocket
Denial Response extension, which uvicorn offers); without the extension the socket is
closed with 1008 (the client sees 403).
"""

from __future__ import annotations

from typing import Any

from corral.errors import CorralError
from corral.gateway.errors import envelope


async def reply(
    scope: Any, send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> None:
    """A complete response with ``body`` (``Content-Length`` is added)."""
    headers = with_length(headers, body)
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    elif "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


def with_length(headers: list[tuple[bytes, bytes]], body: bytes) -> list[tuple[bytes, bytes]]:
    return [*headers, (b"content-length", str(len(body)).encode())]


async def error(scope: Any, send: Any, exc: CorralError, extra: list[tuple[bytes, bytes]]) -> None:
    """``exc`` in the envelope, with its status; ``extra`` headers (CORS) added."""
    await reply(scope, send, *envelope(exc, extra))


async def redirect(scope: Any, send: Any, location: str) -> None:
    await reply(scope, send, 308, [(b"location", location.encode("latin-1"))])
