"""Whether a new sandbox may be created: the kill switch, and the cap per org.

Contracts of ``Admission.slot(org_id)`` (an async context manager around a create):
- Unavailable (503) while the kill switch is engaged globally or for the org.
- Conflict (409) when the org already has ``max_live_sandboxes_per_org`` live
  sandboxes, counting creates of the org still in progress on this node, so a burst of
  concurrent creates cannot overshoot the cap here. Several control planes sharing a
  store each count their own in-progress creates, so together they may overshoot by
  the creates in flight at once.
- The slot is released when the block exits, whether the create succeeded or not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from corral.errors import Conflict, Unavailable
from corral.ports import SandboxStore
from corral.services.switch import KillSwitch


class Admission:
    def __init__(self, store: SandboxStore, kill_switch: KillSwitch, max_live_per_org: int) -> None:
        self.store = store
        self.kill_switch = kill_switch
        self.max_live_per_org = max_live_per_org
        self._pending: dict[str, int] = {}  # org id -> creates in progress

    @asynccontextmanager
    async def slot(self, org_id: str) -> AsyncIterator[None]:
        if self.kill_switch.engaged(org_id):
            raise Unavailable("sandbox creation is switched off (kill switch engaged); retry later")
        self._pending[org_id] = self._pending.get(org_id, 0) + 1
        try:
            cap = self.max_live_per_org
            if cap > 0:
                live = await self.store.count_live(org_id)
                if live + self._pending[org_id] > cap:
                    raise Conflict(
                        f"this org has {live} live sandboxes and at most {cap} are allowed "
                        "(setting max_live_sandboxes_per_org); kill one before creating another"
                    )
            yield
        finally:
            left = self._pending[org_id] - 1
            if left:
                self._pending[org_id] = left
            else:
                del self._pending[org_id]
