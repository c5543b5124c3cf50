"""Locks: one asyncio lock per sandbox id, shared by a runtime and its snapshotter so
that every operation on one sandbox's processes or disk (create, destroy, hibernate,
resume, snapshot, restore, fork) is ordered with the others."""

from __future__ import annotations

import asyncio
import weakref


class Locks:
    """A lock per id, made on first use and forgotten once nothing holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def of(self, sandbox_id: str) -> asyncio.Lock:
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sandbox_id] = lock
        return lock
