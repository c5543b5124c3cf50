"""Sandboxes started ahead, standing by for the next creates: for every template in
use, as many as its recent demand earns, within a budget of sandboxes in all (the core
gives ``standby_memory_mb`` over the default memory limit; by default 2 for each of the
default template and the code sessions' ``nodejs`` with the runc runtime, none with the
process one).

A create of a template standing by, whatever its limits (but a disk larger than the
standbys' disks, ``room_mb``: the default diskMB unless given), takes one: its id becomes the new sandbox's, its limits
are changed in place (``Runtime.set_limits``: cgroups, disk, CPU-time quota), its
egress policy is applied (``Runtime.set_egress``; standing by, it has the default one),
its agent is given the create's envs (``env.set``: later commands get them as if they
had been there from the start), the three at once, and only the store's row is left to
write (its metadata), so the create costs milliseconds instead of a container's start.
Everything else starts a sandbox as before.

How many of each (``targets``): every create (taken from here or not) counts for its
template over the last ``window_s`` seconds; the default template and the ``also``
ones count one create more, so they stand by without demand. Each template counted and
built gets one sandbox, the most demanded first, while the budget lasts, and the rest
of the budget is shared in proportion to the counts. A template whose count fell to
nothing (or below what stands by) has its surplus removed, which frees budget for the
others. With no demand at all, the budget is shared evenly between the default and
``also`` templates.

Contracts:
- A standby sandbox is on the node but not in the store: reconcile's reclaim removes
  any a crash left behind, and ``close`` removes the rest at shutdown.
- What stands by never exceeds the budget: ``holds`` is what the budget holds of the
  node (the default limits' memory and disk, each), which the admission counts as
  promised.
- ``take`` hands out a sandbox only for a template whose digest is the one it was
  started from, only once its limits, egress policy and envs are the create's and its
  agent answered, within ``CLAIM_S``; one that failed any of it is removed, and the
  next is tried.
- Refills run in the background, one sandbox at a time, the emptiest template (for its
  target) first, after creates in progress (``priority.quiet``); only templates already
  built are used (a refill never builds one; the default and ``also`` templates not
  built are looked for again every ``RETRY_S``). A template whose start failed is left
  alone for ``RETRY_S``.
- Standing by, a sandbox runs nothing but its agent: it has had no user, so handing it
  to one shares nothing with anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Collection, Sequence
from dataclasses import dataclass

from corral import priority
from corral.clock import SYSTEM, Clock
from corral.domain import Capacity, EgressPolicy, Limits, SandboxSpec, Template
from corral.errors import CorralError, Unavailable
from corral.ids import new_id
from corral.metrics import Metrics
from corral.ports import Runtime, Templates

log = logging.getLogger("corral.standby")

CLAIM_S = 5.0  # longest a claim (limits, egress, envs) may take before the next is tried
RETRY_S = 30.0
QUIET_MAX_S = 1.0
WINDOW_S = 600.0


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
        budget: int,
        metrics: Metrics | None = None,
        *,
        also: Sequence[str] = (),
        room_mb: int | None = None,
        window_s: float = WINDOW_S,
        clock: Clock = SYSTEM,
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics  # the number standing by, and the creates that took one or not
        self.templates = templates
        self.names = tuple(dict.fromkeys((template, *also)))  # stand by without demand
        self.limits = limits  # what they stand by with
        # the size of their disks: a larger one would serve larger disks, but a filesystem's
        # inode tables grow with its size (1/32 of it), outside what its limit counts
        self.room_mb = max(room_mb or 0, limits.disk_mb)
        self.budget = budget  # sandboxes standing by in all
        self.window_s = window_s
        self.clock = clock
        self._demand: deque[tuple[float, str]] = deque()  # (monotonic, template) per create
        self._counts: dict[str, int] = {}  # creates per template in the window
        self._ready: dict[str, deque[_Ready]] = {name: deque() for name in self.names}
        self._failed: dict[str, float] = {}  # template -> monotonic of its last failed start
        self._wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._discards: set[asyncio.Task[None]] = set()

    def holds(self) -> Capacity:
        """What the sandboxes standing by hold of the node, when all are there."""
        return Capacity(self.budget * self.limits.disk_mb, self.budget * self.limits.memory_mb)

    @property
    def ready(self) -> int:
        return sum(len(entries) for entries in self._ready.values())

    def standing(self, template: str) -> int:
        """How many of ``template`` stand by now."""
        return len(self._ready.get(template, ()))

    def start(self) -> None:
        if self.budget > 0 and self._task is None:
            self._task = asyncio.create_task(self._refill(), name="corral-standby")
            self._wanted.set()

    def fits(self, limits: Limits) -> bool:
        """Whether a standby can be given ``limits`` in place (any, but a larger disk)."""
        return limits.disk_mb <= self.room_mb

    def targets(self, built: Collection[str]) -> dict[str, int]:
        """How many of each template in use and ``built`` to keep standing by (see the
        module docstring); the others are 0."""
        self._expire()
        weights = {name: 1 for name in self.names if name in built}
        for name, count in self._counts.items():
            if name in built:
                weights[name] = weights.get(name, 0) + count
        order = sorted(weights, key=lambda name: -weights[name])  # stable: default, also, by demand
        targets = {name: 1 if i < self.budget else 0 for i, name in enumerate(order)}
        left = self.budget - sum(targets.values())
        if left > 0:
            total = sum(weights.values())
            shares = {name: left * weights[name] / total for name in order}
            for name in order:
                targets[name] += int(shares[name])
            rest = left - sum(int(share) for share in shares.values())
            for name in sorted(order, key=lambda name: int(shares[name]) - shares[name])[:rest]:
                targets[name] += 1
        return targets

    async def take(
        self, template: Template, limits: Limits, envs: dict[str, str], egress: EgressPolicy
    ) -> str | None:
        """The id of a started sandbox for this create, or None (see the contracts);
        either way the create counts as demand for ``template``."""
        self._note(template.name)
        ready = self._ready.get(template.name)
        taken = (
            await self._claim(ready, template, limits, envs, egress) if ready and self.fits(limits) else None
        )
        self._wanted.set()  # refill, or a template newly in use
        if self.metrics is not None:
            self.metrics.standby_claims.labels("hit" if taken else "miss").inc()
        return taken

    async def _claim(
        self,
        ready: deque[_Ready],
        template: Template,
        limits: Limits,
        envs: dict[str, str],
        egress: EgressPolicy,
    ) -> str | None:
        while ready:
            entry = ready.popleft()
            self._counted()
            if entry.digest != template.digest:
                self._discard(entry.id)
                continue
            agent = self.runtime.agent(entry.id)
            steps: list[Awaitable[None]] = [agent.set_envs(envs) if envs else agent.ping()]
            if egress != EgressPolicy():
                steps.append(self._set_egress(entry.id, egress))
            if limits != self.limits:
                steps.append(self.runtime.set_limits(entry.id, limits))
            try:
                await asyncio.wait_for(asyncio.gather(*steps), CLAIM_S)
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

    async def release(self, name: str) -> None:
        """Remove the sandboxes standing by for template ``name`` and forget its demand
        (the template is being deleted: its root must not stay mounted); none stands by
        for it again until creates ask for it."""
        self._counts.pop(name, None)
        self._demand = deque((at, n) for at, n in self._demand if n != name)
        ready = self._ready.pop(name, deque())
        self._counted()
        for entry in ready:
            with contextlib.suppress(CorralError, OSError):
                await self.runtime.discard(entry.id)

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

    # ---- demand ----------------------------------------------------------------------

    def _note(self, name: str) -> None:
        self._demand.append((self.clock.monotonic(), name))
        self._counts[name] = self._counts.get(name, 0) + 1

    def _expire(self) -> None:
        oldest = self.clock.monotonic() - self.window_s
        while self._demand and self._demand[0][0] < oldest:
            _, name = self._demand.popleft()
            left = self._counts[name] - 1
            if left:
                self._counts[name] = left
            else:
                del self._counts[name]

    # ---- refills ---------------------------------------------------------------------

    async def _refill(self) -> None:
        again = False  # a template short of standbys is not built, or failed: look again later
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), RETRY_S if again else None)
            self._wanted.clear()
            again = await self._fill()

    async def _fill(self) -> bool:
        """Remove what is over its target and start standbys, the emptiest template
        first, until every template in use has its target; whether one is left short
        for a while (not built, or its start failed)."""
        while True:
            built = {t.name for t in await self.templates.list()}
            targets = self.targets(built)
            for name, ready in self._ready.items():
                while len(ready) > targets.get(name, 0):
                    self._discard(ready.pop().id)
                    self._counted()
            now = self.clock.monotonic()
            waiting = {name for name, at in self._failed.items() if now - at < RETRY_S}
            short = [
                name
                for name, target in targets.items()
                if self.standing(name) < target and name not in waiting
            ]
            if not short:
                return bool(waiting) or any(name not in built for name in self.names)
            await priority.quiet(QUIET_MAX_S)
            name = min(short, key=lambda name: self.standing(name) / targets[name])
            try:
                await self._start_one(name)
            except CorralError as exc:
                log.warning(
                    "could not start a standby %s sandbox: %s; next try in %.0f s", name, exc.message, RETRY_S
                )
                self._failed[name] = self.clock.monotonic()
            except Exception:  # keep refilling whatever one start did
                log.exception("could not start a standby %s sandbox; next try in %.0f s", name, RETRY_S)
                self._failed[name] = self.clock.monotonic()

    async def _start_one(self, name: str) -> None:
        template = await self.templates.get(name)
        sandbox_id = new_id("sb")
        spec = SandboxSpec(sandbox_id, template, self.limits, {}, EgressPolicy(), disk_room_mb=self.room_mb)
        await self.runtime.create(spec)
        self._ready.setdefault(name, deque()).append(_Ready(sandbox_id, template.digest))
        self._failed.pop(name, None)
        self._counted()

    def _counted(self) -> None:
        if self.metrics is not None:
            self.metrics.sandboxes_standby.set(self.ready)

    def _discard(self, sandbox_id: str) -> None:
        async def discard() -> None:
            try:
                await self.runtime.discard(sandbox_id)
            except CorralError as exc:
                log.warning("could not remove standby sandbox %s: %s", sandbox_id, exc.message)

        task = asyncio.get_running_loop().create_task(discard(), name=f"corral-standby-discard-{sandbox_id}")
        self._discards.add(task)
        task.add_done_callback(self._discards.discard)
