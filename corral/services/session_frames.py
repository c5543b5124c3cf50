"""FrameLog: the frames of one session's stream, kept so every reader gets all of them.

Contracts:
- ``add`` appends a frame and wakes every follower at once; after ``close`` (which the
  session calls right after its ``end`` frame) nothing more is added.
- ``follow`` yields every frame from the first, then live ones as they are added, and
  stops after the last frame of a closed log: a reader that comes late, or after the
  end, gets the whole stream; any number of readers at once, each at its own pace.
- Bounded by what is added: the runner streams at most ``OUTPUT_KEPT`` bytes of
  stdout and of stderr (``corral.services.runner``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from corral.domain.sessions import Frame


class FrameLog:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.closed = False
        self._changed = asyncio.Event()

    def add(self, kind: str, ts: datetime, data: Mapping[str, Any]) -> None:
        if self.closed:
            return
        self.frames.append(Frame(kind, ts, data))
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self.closed = True
        self._changed.set()

    async def follow(self) -> AsyncIterator[Frame]:
        sent = 0
        while True:
            changed = self._changed
            while sent < len(self.frames):
                yield self.frames[sent]
                sent += 1
            if self.closed:
                return
            await changed.wait()
