"""SessionQueue: the admission queue of code sessions.

At most ``total`` sessions hold a slot at once on this node, and at most ``per_org``
of one org (0: no ceiling of that kind). A session over a ceiling waits (its phase
stays ``pending``); it never fails for it. Slots are granted first in, first out:
when one is given back, the waiters are looked at in the order they came and each
whose org has room is admitted (a waiter of a full org does not hold up another org's
behind it). A waiter that is cancelled leaves the queue without taking a slot.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Waiter:
    org_id: str
    admitted: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class SessionQueue:
    def __init__(self, total: int = 0, per_org: int = 0) -> None:
        self.total = total
        self.per_org = per_org
        self.held: Counter[str] = Counter()  # slots held, by org
        self._waiting: list[_Waiter] = []

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def slot(self, org_id: str) -> AsyncIterator[None]:
        """Hold a slot for the block; waits (FIFO) while a ceiling is reached."""
        if not self._fits(org_id):  # those waiting do not fit either (``_admit``)
            waiter = _Waiter(org_id)
            self._waiting.append(waiter)
            try:
                await waiter.admitted
            except BaseException:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.admitted.done() and not waiter.admitted.cancelled():
                    self._give_back(org_id)  # admitted as it was cancelled
                raise
        else:
            self.held[org_id] += 1
        try:
            yield
        finally:
            self._give_back(org_id)

    def _fits(self, org_id: str) -> bool:
        total_ok = not self.total or sum(self.held.values()) < self.total
        org_ok = not self.per_org or self.held[org_id] < self.per_org
        return total_ok and org_ok

    def _give_back(self, org_id: str) -> None:
        self.held[org_id] -= 1
        if self.held[org_id] <= 0:
            del self.held[org_id]
        self._admit()

    def _admit(self) -> None:
        for waiter in list(self._waiting):
            if self.total and sum(self.held.values()) >= self.total:
                return
            if self._fits(waiter.org_id):
                self._waiting.remove(waiter)
                self.held[waiter.org_id] += 1
                waiter.admitted.set_result(None)
