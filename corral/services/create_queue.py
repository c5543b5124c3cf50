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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from corral.errors import Busy
from corral.fair import FairWaiters

EWMA_WEIGHT = 0.2  # of the newest turn in the mean turn time


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
        self._waiters: FairWaiters[str, asyncio.Future[None]] = FairWaiters()  # by org
        self._mean_s = 0.1  # how long a turn takes, recently

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def turn(self, org_id: str) -> AsyncIterator[None]:
        if self.concurrency <= 0:
            yield
            return
        if self.running >= self.concurrency or self._waiters:
            await self._wait(org_id)
        else:
            self.running += 1
            self._waiters.served(org_id)
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
        if len(self._waiters) >= self.max_waiting:
            ahead = len(self._waiters) + self.running
            retry = max(1, math.ceil(ahead * self._mean_s / self.concurrency))
            raise Busy(
                f"this node is {self.work.format(self.running)} and {len(self._waiters)} more are waiting, "
                f"the most it queues (setting {self.setting}); retry in {retry} s",
                retry_after_s=retry,
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(org_id, waiter)
        try:
            await waiter  # the turn is ours once it is set (``_release`` counted it)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed to us as we were cancelled: pass it on
            else:
                self._waiters.remove(org_id, waiter)
            raise

    def _release(self) -> None:
        """A turn ends: hand it to the next org's first waiter, or free it."""
        while (next_one := self._waiters.pop()) is not None:
            org_id, waiter = next_one
            if not waiter.done():
                waiter.set_result(None)
                self._waiters.served(org_id)
                return
        self.running -= 1
