"""CreateQueue: the creates this node works on at once, and the fair queue of the rest.

Contracts of ``CreateQueue.turn(org_id)`` (an async context manager around the work of
one create, fork, restore or wake: ``Admission.slot`` enters it):
- At most ``concurrency`` turns are held at once (0: no bound, no queue). A 2-core node
  makes a burst of a hundred sandboxes faster one handful at a time than all at once:
  runc, mounts and the firewall's transactions share the same CPUs and kernel locks.
- The others wait, first in first out within an org, and orgs take turns: when a turn
  ends, of the orgs with a create waiting the one served longest ago gets it, so one
  org's burst does not starve another org's single create.
- At most ``max_waiting`` wait at once: one more is Busy (429) with a ``retry_after_s``
  estimated from the creates ahead and how long recent turns took; nothing is started.
- A waiter cancelled (its client gone) leaves the queue; a turn handed to a waiter
  that was cancelled meanwhile passes on to the next one. A turn is released when its
  block exits, however it exits.
- With ``max_hold_s``, a turn is also released once held that long, while its block goes
  on: work that waits rather than computes (a long command in its sandbox) then stops
  keeping others waiting. A waiter then waits at most about
  ``ceil(max_waiting / concurrency) * max_hold_s`` seconds.

The same queue bounds exec round trips in flight (``services/commands.py``): ``work``
names the work and ``setting`` the setting in the Busy message.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from corral.errors import Busy

EWMA_WEIGHT = 0.2  # of the newest turn in the mean turn time
MAX_ORGS_REMEMBERED = 10_000


class CreateQueue:
    def __init__(
        self,
        concurrency: int,
        max_waiting: int,
        *,
        max_hold_s: float | None = None,
        work: str = "creating {} sandboxes",
        setting: str = "max_queued_creates",
    ) -> None:
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.max_hold_s = max_hold_s
        self.work = work
        self.setting = setting
        self.running = 0
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}  # org -> its waiters
        self._count = 0  # waiters in all
        self._served: dict[str, int] = {}  # org -> when it was last given a turn (a count)
        self._turns = 0
        self._mean_s = 0.1  # how long a turn takes, recently

    @property
    def waiting(self) -> int:
        return self._count

    @asynccontextmanager
    async def turn(self, org_id: str) -> AsyncIterator[None]:
        if self.concurrency <= 0:
            yield
            return
        if self.running >= self.concurrency or self._count:
            await self._wait(org_id)
        else:
            self.running += 1
            self._serve(org_id)
        started = time.monotonic()
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._mean_s += EWMA_WEIGHT * (time.monotonic() - started - self._mean_s)
                self._release()

        timer = None
        if self.max_hold_s is not None:
            timer = asyncio.get_running_loop().call_later(self.max_hold_s, release)
        try:
            yield
        finally:
            if timer is not None:
                timer.cancel()
            release()

    async def _wait(self, org_id: str) -> None:
        if self._count >= self.max_waiting:
            ahead = self._count + self.running
            retry = max(1, math.ceil(ahead * self._mean_s / self.concurrency))
            raise Busy(
                f"this node is {self.work.format(self.running)} and {self._count} more are waiting, "
                f"the most it queues (setting {self.setting}); retry in {retry} s",
                retry_after_s=retry,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(org_id, deque()).append(waiter)
        self._count += 1
        try:
            await waiter  # the turn is ours once it is set (``_release`` counted it)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed to us as we were cancelled: pass it on
            else:
                self._forget(org_id, waiter)
            raise

    def _release(self) -> None:
        """A turn ends: hand it to the next org's first waiter, or free it."""
        while self._waiting:
            org_id = min(self._waiting, key=lambda org: self._served.get(org, -1))  # orgs waiting: few
            queue = self._waiting[org_id]
            waiter = queue.popleft()
            self._count -= 1
            if not queue:
                del self._waiting[org_id]
            if not waiter.done():
                waiter.set_result(None)
                self._serve(org_id)
                return
        self.running -= 1

    def _serve(self, org_id: str) -> None:
        self._served[org_id] = self._turns
        self._turns += 1
        if len(self._served) > MAX_ORGS_REMEMBERED:  # only the waiting ones' order matters
            self._served = {org: turn for org, turn in self._served.items() if org in self._waiting}

    def _forget(self, org_id: str, waiter: asyncio.Future[None]) -> None:
        queue = self._waiting.get(org_id)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._count -= 1
            if not queue:
                del self._waiting[org_id]
