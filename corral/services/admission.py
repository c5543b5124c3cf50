"""Whether a new sandbox may be created: the kill switch, the cap per org, and what the
node may promise.

Contracts of ``Admission.slot(org_id, limits)`` (an async context manager around a
create or fork):
- Unavailable (503) while the kill switch is engaged globally or for the org.
- Conflict (409) when the org already has ``max_live_sandboxes_per_org`` live
  sandboxes, counting creates of the org still in progress on this node, so a burst of
  concurrent creates cannot overshoot the cap here. Several control planes sharing a
  store each count their own in-progress creates, so together they may overshoot by
  the creates in flight at once.
- Conflict (409) naming the setting when ``limits`` would take the node past what it
  may promise (``promise``).
- Then the create waits for its turn in ``queue`` (``create_queue.py``: a bounded number
  at once, orgs taking turns; Busy, 429 with a retry time, when the queue is full),
  holding its place in the counts above while it waits, so what it was promised stays
  promised.
- The slot is released when the block exits, whether the create succeeded or not.

Contracts of ``Admission.promise(disk_mb, memory_mb)`` (around anything that makes a
sandbox hold resources again: create, fork, and restore or wake of a hibernated one):
- What is promised is the store's sum (``SandboxStore.holdings``: diskMB of live and
  hibernated sandboxes, memoryMB of live ones), the standbys' (``standing``), and the
  promises in progress on this node, this one included. Beyond ``capacity.disk_mb`` or
  ``capacity.memory_mb`` (0: no limit) it is Conflict (409), naming
  ``max_promised_disk_mb`` or ``max_promised_memory_mb``; nothing is started.
- In-progress promises are counted until the block exits (by then the row counts them),
  so concurrent creates cannot overshoot together. A check takes the promises in
  progress before it reads the store, never after: one that ends during the read (its
  row written, its promise gone) may then be counted twice, but never missed. The cap
  per org is checked the same way, in the same read (one query a create). The store's sum covers every node
  sharing it: with several control planes, give each the capacity of the whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from corral.domain import Capacity, Limits
from corral.errors import NoRoom, Unavailable
from corral.ports import SandboxStore
from corral.services.create_queue import CreateQueue
from corral.services.kill_switch import KillSwitch


class Admission:
    def __init__(
        self,
        store: SandboxStore,
        kill_switch: KillSwitch,
        max_live_per_org: int,
        capacity: Capacity | None = None,
        standing: Capacity | None = None,
        queue: CreateQueue | None = None,
    ) -> None:
        self.store = store
        self.kill_switch = kill_switch
        self.max_live_per_org = max_live_per_org
        self.capacity = capacity or Capacity()
        self.standing = standing or Capacity()  # what the standbys hold (services/standby.py)
        self.queue = queue or CreateQueue(0, 0)  # no bound unless given
        self._pending: dict[str, int] = {}  # org id -> creates in progress
        self._disk_mb = 0  # promises in progress
        self._memory_mb = 0

    @asynccontextmanager
    async def slot(self, org_id: str, limits: Limits | None = None) -> AsyncIterator[None]:
        if self.kill_switch.engaged(org_id):
            raise Unavailable("sandbox creation is switched off (kill switch engaged); retry later")
        self._pending[org_id] = self._pending.get(org_id, 0) + 1
        try:
            disk_mb, memory_mb = (limits.disk_mb, limits.memory_mb) if limits else (0, 0)
            async with self._promised(disk_mb, memory_mb, org_id), self.queue.turn(org_id):
                yield
        finally:
            left = self._pending[org_id] - 1
            if left:
                self._pending[org_id] = left
            else:
                del self._pending[org_id]

    def promise(self, disk_mb: int, memory_mb: int) -> AbstractAsyncContextManager[None]:
        return self._promised(disk_mb, memory_mb, None)

    @asynccontextmanager
    async def _promised(self, disk_mb: int, memory_mb: int, org_id: str | None) -> AsyncIterator[None]:
        """``promise``; with ``org_id``, the org's cap checked in the same read."""
        self._disk_mb += disk_mb
        self._memory_mb += memory_mb
        try:
            cap, limit = self.max_live_per_org if org_id else 0, self.capacity
            checked = (disk_mb and limit.disk_mb) or (memory_mb and limit.memory_mb)
            if cap > 0 or checked:
                # the creates and promises in progress before the read: see the docstring
                pending = self._pending.get(org_id, 0) if org_id else 0
                in_progress = (self._disk_mb, self._memory_mb)
                held = await self.store.holdings(org_id)
                if cap > 0 and held.org_live + pending > cap:
                    raise NoRoom(
                        f"this org has {held.org_live} live sandboxes and at most {cap} are allowed "
                        "(setting max_live_sandboxes_per_org); kill one before creating another"
                    )
                if checked:
                    disk = held.disk_mb + self.standing.disk_mb + in_progress[0]
                    _check("disk", disk_mb, disk, limit.disk_mb)
                    memory = held.memory_mb + self.standing.memory_mb + in_progress[1]
                    _check("memory", memory_mb, memory, limit.memory_mb)
            yield
        finally:
            self._disk_mb -= disk_mb
            self._memory_mb -= memory_mb


def _check(what: str, asked: int, total: int, limit: int) -> None:
    """Conflict when ``total`` (``asked`` included) is over ``limit``."""
    if asked and limit and total > limit:
        raise NoRoom(
            f"this node cannot promise {asked} MiB more {what}: its sandboxes hold "
            f"{total - asked} MiB of the {limit} MiB it may promise (setting "
            f"max_promised_{what}_mb); ask for less, or kill a sandbox"
            + (" or hibernate one" if what == "memory" else "")
        )
