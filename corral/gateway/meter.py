"""Counts what one gateway exchange moved, for the metrics: the status answered and
the body bytes in each direction (HTTP bodies and WebSocket messages)."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


class Meter:
    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self.status = 0
        self.bytes_in = 0  # from the client, towards the sandbox
        self.bytes_out = 0  # towards the client

    async def receive(self) -> Message:
        message: Message = await self._receive()
        kind = message["type"]
        if kind == "http.request" or kind == "websocket.receive":
            self.bytes_in += _size(message)
        return message

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = int(message["status"])
        elif kind == "http.response.body" or kind == "websocket.send":
            self.bytes_out += _size(message)
        elif kind == "websocket.accept":
            self.status = 101
        elif kind == "websocket.close" and not self.status:
            self.status = 403  # refused before the upgrade completed
        await self._send(message)


def _size(message: Message) -> int:
    body = message.get("body") or message.get("bytes") or message.get("text") or b""
    return len(body)
