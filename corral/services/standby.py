"""Sandboxes started ahead, standing by for the next creates (setting
``standby_sandboxes``; by default 2 with the runc runtime, none with the process one).

A create that asks for nothing a started sandbox cannot take afterwards (the default
template, the default limits, the default egress policy) takes one: its id becomes the
new sandbox's, its agent is given the create's envs (``env.set``: later commands get
them as if they had been there from the start), and only the store's row is left to
write, so the create costs milliseconds instead of a container's start. Everything
else starts a sandbox as before.

Contracts:
- A standby sandbox is on the node but not in the store: reconcile's reclaim removes
  any a crash left behind, and ``close`` removes the rest at shutdown.
- ``take`` hands out a sandbox only for a template whose digest is the one it was
  started from and for equal limits, and only after its agent answered within
  ``PING_S`` (a ping, or the envs taken; one that does not is removed, and the next is
  tried).
- Refills run in the background, one sandbox at a time, after creates in progress
  (``priority.quiet``); only templates already built are used (a refill never
  builds one). A refill that fails waits ``RETRY_S`` before the next try.
- Standing by, a sandbox runs nothing but its agent: it has had no user, so handing it
  to one shares nothing with anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from prometheus_client import Gauge

from corral import priority
from corral.domain import Capacity, EgressPolicy, Limits, SandboxSpec, Template
from corral.errors import CorralError
from corral.ids import new_id
from corral.ports import Runtime, Templates

log = logging.getLogger("corral.standby")

PING_S = 1.0
RETRY_S = 30.0
QUIET_MAX_S = 1.0


@dataclass(frozen=True)
class _Ready:
    id: str
    digest: str  # of the template it was started from


class Standby:
    def __init__(
        self,
        runtime: Runtime,
        templates: Templates,
        template: str,
        limits: Limits,
        size: int,
        gauge: Gauge | None = None,
    ) -> None:
        self.runtime = runtime
        self.gauge = gauge  # set to the number standing by
        self.templates = templates
        self.template = template
        self.limits = limits
        self.size = size
        self._ready: deque[_Ready] = deque()
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._discards: set[asyncio.Task[None]] = set()

    def holds(self) -> Capacity:
        """What the sandboxes standing by hold of the node, when all are there."""
        return Capacity(self.size * self.limits.disk_mb, self.size * self.limits.memory_mb)

    @property
    def ready(self) -> int:
        return len(self._ready)

    def start(self) -> None:
        if self.size > 0 and self._task is None:
            self._task = asyncio.create_task(self._refill(), name="corral-standby")
            self._wanted.set()

    async def take(
        self, template: Template, limits: Limits, envs: dict[str, str], egress: EgressPolicy
    ) -> str | None:
        """The id of a started sandbox for this create, or None (see the contracts)."""
        if egress != EgressPolicy() or limits != self.limits:
            return None
        while self._ready:
            entry = self._ready.popleft()
            self._counted()
            self._wanted.set()
            if entry.digest != template.digest:
                self._discard(entry.id)
                continue
            agent = self.runtime.agent(entry.id)
            try:
                await asyncio.wait_for(agent.set_envs(envs) if envs else agent.ping(), PING_S)
            except (CorralError, OSError, TimeoutError) as exc:
                log.warning("standby sandbox %s did not answer (%s); removing it", entry.id, exc)
                self._discard(entry.id)
                continue
            except BaseException:  # the create was cancelled: nobody will own it
                self._discard(entry.id)
                raise
            return entry.id
        return None

    async def close(self) -> None:
        """Stop refilling and remove every standby sandbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._ready:
            entry = self._ready.popleft()
            self._counted()
            with contextlib.suppress(CorralError, OSError):
                await self.runtime.discard(entry.id)
        if self._discards:
            await asyncio.wait(list(self._discards))

    async def _refill(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            while len(self._ready) < self.size:
                await priority.quiet(QUIET_MAX_S)
                try:
                    started = await self._start_one()
                except CorralError as exc:
                    log.warning(
                        "could not start a standby sandbox: %s; next try in %.0f s", exc.message, RETRY_S
                    )
                    started = False
                except Exception:  # keep refilling whatever one start did
                    log.exception("could not start a standby sandbox; next try in %.0f s", RETRY_S)
                    started = False
                if not started:
                    await asyncio.sleep(RETRY_S)
                    self._wanted.set()
                    break

    async def _start_one(self) -> bool:
        if self.template not in {t.name for t in await self.templates.list()}:
            return False  # not built yet: never build one from here
        template = await self.templates.get(self.template)
        sandbox_id = new_id("sb")
        await self.runtime.create(SandboxSpec(sandbox_id, template, self.limits, {}, EgressPolicy()))
        self._ready.append(_Ready(sandbox_id, template.digest))
        self._counted()
        return True

    def _counted(self) -> None:
        if self.gauge is not None:
            self.gauge.set(len(self._ready))

    def _discard(self, sandbox_id: str) -> None:
        async def discard() -> None:
            try:
                await self.runtime.discard(sandbox_id)
            except CorralError as exc:
                log.warning("could not remove standby sandbox %s: %s", sandbox_id, exc.message)

        task = asyncio.get_running_loop().create_task(discard(), name=f"corral-standby-discard-{sandbox_id}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)
