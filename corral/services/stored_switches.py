"""Kill switches kept in the store, mirrored into the in-memory ``KillSwitch``.

An operator flips them with ``corral killswitch on|off [--org NAME]``, which writes the
store (so it needs access to the data dir or the database, not an API key, and it
reaches every control plane sharing the store). Each server re-reads the store at
start and then every ``kill_switch_refresh_s`` seconds, so a flip takes effect within
that time. A failed read keeps the last state it knew (and logs), so a store outage
neither engages nor releases anything.
"""

from __future__ import annotations

import asyncio
import logging

from corral.domain.killswitch import GLOBAL
from corral.ports import SwitchStore
from corral.services.kill_switch import KillSwitch

log = logging.getLogger("corral.switches")


class StoredSwitches:
    def __init__(self, store: SwitchStore, switch: KillSwitch, interval_s: float) -> None:
        self.store = store
        self.switch = switch
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Load the store's switches into ``switch`` now."""
        scopes = {s.scope for s in await self.store.engaged()}
        self.switch.load(GLOBAL in scopes, frozenset(scopes - {GLOBAL}))

    def start(self) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(self.interval_s)
                try:
                    await self.refresh()
                except Exception:  # keep the last known state; try again next time
                    log.exception("reading the kill switches failed")

        if self._task is None and self.interval_s > 0:
            self._task = asyncio.create_task(loop(), name="corral-kill-switches")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
