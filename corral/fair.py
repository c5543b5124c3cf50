"""FairWaiters: waiters queued per key (an org, a credential), the key served longest ago
first, first in first out within a key. The bookkeeping under the create queue
(``services/create_queue.py``) and the front's exec turns (``api/front_turns.py``): each
decides when a turn is free and how a waiter is told; this decides whose it is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")

MAX_KEYS_REMEMBERED = 10_000


class FairWaiters(Generic[K, W]):
    def __init__(self) -> None:
        self._waiting: dict[K, deque[W]] = {}
        self._count = 0  # waiters in all
        self._served: dict[K, int] = {}  # key -> when it was last given a turn (a count)
        self._turns = 0

    def __len__(self) -> int:
        return self._count

    def add(self, key: K, waiter: W) -> None:
        self._waiting.setdefault(key, deque()).append(waiter)
        self._count += 1

    def remove(self, key: K, waiter: W) -> None:
        """``waiter`` leaves the queue (a no-op when it is not in it)."""
        queue = self._waiting.get(key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._count -= 1
            if not queue:
                del self._waiting[key]

    def pop(self) -> tuple[K, W] | None:
        """The first waiter of the key served longest ago (None: nobody waits); the
        caller gives it the turn and then calls ``served``."""
        if not self._waiting:
            return None
        key = min(self._waiting, key=lambda k: self._served.get(k, -1))  # keys waiting: few
        queue = self._waiting[key]
        waiter = queue.popleft()
        self._count -= 1
        if not queue:
            del self._waiting[key]
        return key, waiter

    def served(self, key: K) -> None:
        """``key`` was given a turn now."""
        self._served[key] = self._turns
        self._turns += 1
        if len(self._served) > MAX_KEYS_REMEMBERED:  # only the waiting ones' order matters
            self._served = {k: n for k, n in self._served.items() if k in self._waiting}
