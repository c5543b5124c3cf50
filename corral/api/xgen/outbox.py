"""What a connection of the xgen WebSocket has to send, bounded.

Every frame goes through one ``Outbox``, sent in order by one writer task. ``put``
waits while more than ``limit`` bytes wait to be sent, so a client that reads slowly
slows what produces for it (the process output readers, whose agent then pauses the
process; the file reads; the watchers, whose agent then drops events) instead of
making corral buffer without bound. ``offer`` is for what may be skipped (stats).
A frame larger than the limit is taken when nothing else waits.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.websockets import WebSocket

LIMIT = 4 << 20  # bytes waiting to be sent, at most (but one larger frame)


class Outbox:
    def __init__(self, ws: WebSocket, limit: int = LIMIT) -> None:
        self.ws = ws
        self.limit = limit
        self._frames: deque[bytes] = deque()
        self._size = 0
        self._waiting = asyncio.Event()  # frames wait to be sent
        self._room = asyncio.Event()  # set whenever a frame has been sent

    async def put(self, frame: bytes) -> None:
        """Queue ``frame``, first waiting for room (see above)."""
        while self._size and self._size + len(frame) > self.limit:
            self._room.clear()
            await self._room.wait()
        self._add(frame)

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` if there is room now; whether it was queued."""
        if self._size and self._size + len(frame) > self.limit:
            return False
        self._add(frame)
        return True

    def _add(self, frame: bytes) -> None:
        self._frames.append(frame)
        self._size += len(frame)
        self._waiting.set()

    async def drained(self) -> None:
        """Return once everything queued so far has been sent."""
        while self._size:
            self._room.clear()
            await self._room.wait()

    async def run(self) -> None:
        """Send frames in order until the client goes (the socket raises)."""
        while True:
            await self._waiting.wait()
            frame = self._frames.popleft()
            if not self._frames:
                self._waiting.clear()
            await self.ws.send_bytes(frame)
            self._size -= len(frame)
            self._room.set()
