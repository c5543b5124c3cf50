"""Sandboxes started ahead, standing by for the next creates: ``standby_sandboxes`` of
the default template and of each template ``also`` names (the core names the code
sessions': ``base``, ``nodejs``); by default 2 with the runc runtime, none with the
process one.

A create that asks for nothing a started sandbox cannot take afterwards (a template
standing by, the default limits) takes one: its id becomes the new sandbox's, its
egress policy is applied (``Runtime.set_egress``; standing by, it has the default
one), its agent is given the create's envs (``env.set``: later commands get them as if
they had been there from the start), and only the store's row is left to write, so the
create costs milliseconds instead of a container's start. Everything else starts a
sandbox as before.

Contracts:
- A standby sandbox is on the node but not in the store: reconcile's reclaim removes
  any a crash left behind, and ``close`` removes the rest at shutdown.
- ``take`` hands out a sandbox only for a template whose digest is the one it was
  started from and for equal limits, only once its egress policy is the create's, and
  only after its agent answered within ``PING_S`` (a ping, or the envs taken); one
  whose policy could not be set or whose agent did not answer is removed, and the next
  is tried.
- Refills run in the background, one sandbox at a time, the emptiest template first,
  after creates in progress (``priority.quiet``); only templates already built are
  used (a refill never builds one; one not built is looked for again every
  ``RETRY_S``). A refill that fails waits ``RETRY_S`` before the next try.
- Standing by, a sandbox runs nothing but its agent: it has had no user, so handing it
  to one shares nothing with anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from corral import priority
from corral.domain import Capacity, EgressPolicy, Limits, SandboxSpec, Template
from corral.errors import CorralError, Unavailable
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
        *,
        also: Sequence[str] = (),
    ) -> None:
        self.runtime = runtime
        self.gauge = gauge  # set to the number standing by
        self.templates = templates
        self.names = tuple(dict.fromkeys((template, *also)))  # the templates standing by
        self.limits = limits
        self.size = size  # of each template
        self._ready: dict[str, deque[_Ready]] = {name: deque() for name in self.names}
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._discards: set[asyncio.Task[None]] = set()

    def holds(self) -> Capacity:
        """What the sandboxes standing by hold of the node, when all are there."""
        count = self.size * len(self.names)
        return Capacity(count * self.limits.disk_mb, count * self.limits.memory_mb)

    @property
    def ready(self) -> int:
        return sum(len(entries) for entries in self._ready.values())

    def start(self) -> None:
        if self.size > 0 and self.names and self._task is None:
            self._task = asyncio.create_task(self._refill(), name="corral-standby")
            self._wanted.set()

    async def take(
        self, template: Template, limits: Limits, envs: dict[str, str], egress: EgressPolicy
    ) -> str | None:
        """The id of a started sandbox for this create, or None (see the contracts)."""
        ready = self._ready.get(template.name)
        if ready is None or limits != self.limits:
            return None
        while ready:
            entry = ready.popleft()
            self._counted()
            self._wanted.set()
            if entry.digest != template.digest:
                self._discard(entry.id)
                continue
            agent = self.runtime.agent(entry.id)
            try:
                if egress != EgressPolicy():
                    await self._set_egress(entry.id, egress)
                await asyncio.wait_for(agent.set_envs(envs) if envs else agent.ping(), PING_S)
            except (CorralError, OSError, TimeoutError) as exc:
                log.warning("standby sandbox %s could not be handed out (%s); removing it", entry.id, exc)
                self._discard(entry.id)
                continue
            except BaseException:  # the create was cancelled: nobody will own it
                self._discard(entry.id)
                raise
            return entry.id
        return None

    async def _set_egress(self, sandbox_id: str, egress: EgressPolicy) -> None:
        """The create's policy, as the runtime's create would have applied it (without a
        network, a sandbox has loopback only: there is nothing to apply)."""
        with contextlib.suppress(Unavailable):
            await self.runtime.set_egress(sandbox_id, egress)

    async def close(self) -> None:
        """Stop refilling and remove every standby sandbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for ready in self._ready.values():
            while ready:
                entry = ready.popleft()
                self._counted()
                with contextlib.suppress(CorralError, OSError):
                    await self.runtime.discard(entry.id)
        if self._discards:
            await asyncio.wait(list(self._discards))

    async def _refill(self) -> None:
        unbuilt = False  # a template short of standbys is not built: look again later
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), RETRY_S if unbuilt else None)
            self._wanted.clear()
            unbuilt = await self._fill()

    async def _fill(self) -> bool:
        """Start standbys, the emptiest template first, until every template built has
        ``size``; whether one short of them is not built."""
        while True:
            short = [name for name in self.names if len(self._ready[name]) < self.size]
            if not short:
                return False
            built = {t.name for t in await self.templates.list()}
            startable = [name for name in short if name in built]
            if not startable:
                return True
            await priority.quiet(QUIET_MAX_S)
            try:
                await self._start_one(min(startable, key=lambda name: len(self._ready[name])))
            except CorralError as exc:
                log.warning("could not start a standby sandbox: %s; next try in %.0f s", exc.message, RETRY_S)
                await asyncio.sleep(RETRY_S)
            except Exception:  # keep refilling whatever one start did
                log.exception("could not start a standby sandbox; next try in %.0f s", RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _start_one(self, name: str) -> None:
        template = await self.templates.get(name)
        sandbox_id = new_id("sb")
        await self.runtime.create(SandboxSpec(sandbox_id, template, self.limits, {}, EgressPolicy()))
        self._ready[name].append(_Ready(sandbox_id, template.digest))
        self._counted()

    def _counted(self) -> None:
        if self.gauge is not None:
            self.gauge.set(self.ready)

    def _discard(self, sandbox_id: str) -> None:
        async def discard() -> None:
            try:
                await self.runtime.discard(sandbox_id)
            except CorralError as exc:
                log.warning("could not remove standby sandbox %s: %s", sandbox_id, exc.message)

        task = asyncio.get_running_loop().create_task(discard(), name=f"corral-standby-discard-{sandbox_id}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)
