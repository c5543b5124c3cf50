"""Hibernation and pause: a sandbox parked on its disk and started again on it, or
frozen where it is and thawed, for every part that needs it (the sandbox service's
``agent_for``, idle reaper and reconcile; the lifecycle routes; checkpoints' restores;
the gateway's wakes).

Parking a sandbox stops its processes and frees its memory, cgroups, mounts and network,
and keeps its disk (``Runtime.hibernate``); starting it again (``Runtime.resume``) gives
the same files and fresh processes (process memory is not kept: no CRIU on this kernel).

Contracts:
- ``hibernate`` parks a running sandbox and records it hibernated; for one already
  hibernated it answers the same (the kept disk's size); Conflict otherwise.
- ``pause`` freezes a running sandbox (``Runtime.freeze``: its processes keep their
  memory and use no CPU) and records it paused; for one already paused it answers the
  same; Conflict naming the state otherwise. The row is written first, then the
  processes frozen (a crash in between leaves a paused row on running processes, which
  reconcile freezes); ``hub.sandbox_stopped`` drops the caches that took it for running.
- ``unpause`` thaws a paused sandbox and records it running (thawed first: a crash in
  between leaves a paused row on thawed processes, frozen again by reconcile); any other
  sandbox is answered as it is. It is what every use of a paused sandbox goes through
  (``awake``): one write to the cgroup and one to the store.
- ``awake`` resumes a paused sandbox and wakes a hibernated one (a paused sandbox
  hibernated meanwhile is woken). Wakes are single-flight per sandbox: concurrent
  requests share one wake, which runs as its own task (a client that disconnects does
  not cancel it). When ``wake_in_background`` is set for the current request (the
  OpenComputer surface sets it for ``X-OSB-Async-Wake: 1``), it starts the wake and
  raises SandboxWaking at once instead of waiting.
- Pause, unpause, hibernate (of a paused sandbox too: its processes are killed frozen),
  wake, restore (``services/checkpoints.py``) and reconcile's parking of a sandbox are
  serialised per sandbox by ``lock``.
- ``mark_hibernated`` writes the row (with the activity not yet written, ``Activity``)
  and publishes ``hub.sandbox_stopped``.
- ``idle_pause`` and ``idle_out`` are the idle reaper's pause and hibernate: a failure
  is logged and returned, and the caller hibernates (a pause failed) or stops (a
  hibernate failed) the sandbox instead.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import replace

from corral.clock import SYSTEM, Clock
from corral.domain import Sandbox, SandboxSpec, SandboxStatus
from corral.errors import Conflict, CorralError, SandboxWaking
from corral.metrics import Metrics
from corral.pausepoints import pause
from corral.ports import Runtime, SandboxStore
from corral.services.activity import Activity
from corral.services.admission import Admission
from corral.services.audit import AuditKind, AuditService
from corral.services.hub import Hub
from corral.services.sandboxes import BootHook
from corral.services.template_names import TemplateNames

log = logging.getLogger("corral.lifecycle")

wake_in_background: ContextVar[bool] = ContextVar("corral_wake_in_background", default=False)


class Hibernator:
    def __init__(
        self,
        store: SandboxStore,
        runtime: Runtime,
        *,
        admission: Admission,
        names: TemplateNames,
        activity: Activity,
        audit: AuditService,
        metrics: Metrics,
        hub: Hub,
        boot_hooks: Sequence[BootHook] = (),
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.admission = admission
        self.names = names  # the org's templates and the built-ins, no other
        self.activity = activity
        self.audit = audit
        self.metrics = metrics
        self.hub = hub
        self.boot_hooks = tuple(boot_hooks)  # run on a sandbox woken, before it is running
        self.clock = clock
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._waking: dict[str, asyncio.Task[Sandbox]] = {}

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """Held by every operation that stops and starts a sandbox on its disk."""
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sandbox_id] = lock
        return lock

    # ---- pause -----------------------------------------------------------------------

    async def pause(self, sandbox_id: str) -> Sandbox:
        """Freeze ``sandbox_id`` where it is (see the module docstring); the sandbox."""
        async with self.lock(sandbox_id):
            current = await self._find(sandbox_id)
            if current.status is SandboxStatus.PAUSED:
                return current
            if current.status is not SandboxStatus.RUNNING:
                raise Conflict(
                    f"sandbox {sandbox_id} is {current.status.value}; only a running one can be paused"
                )
            touched = self.activity.settle(current)
            paused = replace(touched, status=SandboxStatus.PAUSED)
            await self.store.update(paused)
            self.hub.sandbox_stopped.publish(sandbox_id)  # it no longer runs: caches drop it
            try:
                await self.runtime.freeze(sandbox_id)
            except BaseException:
                await asyncio.shield(self.store.update(touched))  # it runs: freeze thawed it
                raise
            self.hub.sandbox_paused.publish(paused)
            log.info("paused %s", sandbox_id)
            return paused

    async def unpause(self, sandbox: Sandbox) -> Sandbox:
        """Thaw ``sandbox`` if it is (still) paused (see the module docstring); the
        sandbox as it is then. Thawing one no longer paused changes nothing (under the
        lock it is running, and not frozen, or has no processes), so the row is not read
        again first: the write says whether it was still paused."""
        async with self.lock(sandbox.id):
            await self.runtime.thaw(sandbox.id)
            now = self.clock.now()
            if await self.store.set_status(sandbox.id, SandboxStatus.PAUSED, SandboxStatus.RUNNING, now):
                return replace(sandbox, status=SandboxStatus.RUNNING, last_active_at=now, error=None)
            return await self._find(sandbox.id)

    async def idle_pause(self, sandbox: Sandbox) -> str | None:
        """The reaper's pause; why it failed (logged: hibernate the sandbox instead), or
        None (paused, or no longer running)."""
        try:
            await self.pause(sandbox.id)
        except Conflict:
            return None  # it stopped, or was paused or hibernated, meanwhile
        except CorralError as exc:
            log.warning("idle pause of %s failed (%s); hibernating it", sandbox.id, exc.message)
            return exc.message
        await self.audit.record(
            AuditKind.PAUSED, org_id=sandbox.org_id, sandbox_id=sandbox.id, data={"reason": "idle timeout"}
        )
        return None

    # ---- hibernate -------------------------------------------------------------------

    async def hibernate(self, sandbox_id: str) -> int:
        """Park ``sandbox_id`` (see the module docstring); the kept disk's size."""
        async with self.lock(sandbox_id):
            current = await self._find(sandbox_id)
            if current.status is SandboxStatus.HIBERNATED:
                return await self.runtime.hibernate(sandbox_id)  # idempotent
            if not current.live:
                raise Conflict(f"sandbox {sandbox_id} is {current.status.value}")
            size = await self.runtime.hibernate(sandbox_id)
            await pause("hibernate.stopped")
            await self.mark_hibernated(current, None)
            return size

    async def idle_out(self, sandbox: Sandbox) -> str | None:
        """The reaper's hibernate; why it failed (logged: stop the sandbox instead), or
        None (hibernated, or stopped or hibernated meanwhile)."""
        try:
            await self.hibernate(sandbox.id)
        except Conflict:
            return None  # it stopped or was hibernated meanwhile
        except CorralError as exc:
            log.warning("idle hibernate of %s failed (%s); stopping it", sandbox.id, exc.message)
            return exc.message
        await self.audit.record(
            AuditKind.HIBERNATED,
            org_id=sandbox.org_id,
            sandbox_id=sandbox.id,
            data={"reason": "idle timeout"},
        )
        return None

    async def mark_hibernated(self, sandbox: Sandbox, reason: str | None) -> None:
        """Record a parked sandbox as hibernated (its activity flushed into the row)."""
        touched = self.activity.settle(await self.store.find(sandbox.id) or sandbox)
        await self.store.update(replace(touched, status=SandboxStatus.HIBERNATED, error=reason))
        self.metrics.sandboxes_active.dec()
        log.info("hibernated %s%s", sandbox.id, f" ({reason})" if reason else "")
        self.hub.sandbox_stopped.publish(sandbox.id)

    # ---- wake ------------------------------------------------------------------------

    async def awake(self, sandbox: Sandbox) -> Sandbox:
        """See the module docstring (single-flight; SandboxWaking in background mode)."""
        if sandbox.status is SandboxStatus.PAUSED:
            sandbox = await asyncio.shield(self.unpause(sandbox))
        if sandbox.status is not SandboxStatus.HIBERNATED:
            return sandbox
        task = self.wake_task(sandbox.id)
        if wake_in_background.get():
            raise SandboxWaking(f"sandbox {sandbox.id} is hibernated and waking up; retry shortly")
        return await asyncio.shield(task)

    def wake_task(self, sandbox_id: str) -> asyncio.Task[Sandbox]:
        """The wake of ``sandbox_id`` in progress, or a new one."""
        task = self._waking.get(sandbox_id)
        if task is None:
            task = asyncio.create_task(self._wake(sandbox_id), name=f"wake-{sandbox_id}")
            self._waking[sandbox_id] = task
            task.add_done_callback(lambda done: self._woken(sandbox_id, done))
        return task

    def _woken(self, sandbox_id: str, task: asyncio.Task[Sandbox]) -> None:
        self._waking.pop(sandbox_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.warning("waking %s failed: %s", sandbox_id, task.exception())

    async def _wake(self, sandbox_id: str) -> Sandbox:
        async with self.lock(sandbox_id):
            current = await self._find(sandbox_id)
            if current.status in (SandboxStatus.STARTING, SandboxStatus.RUNNING):
                return current
            if current.status is not SandboxStatus.HIBERNATED:
                raise Conflict(f"sandbox {sandbox_id} is {current.status.value}")
            async with self.admission.promise(0, current.limits.memory_mb):
                await self.runtime.resume(await self.spec(current))
            try:
                for hook in self.boot_hooks:  # as SandboxService.booted
                    await hook(sandbox_id, current.template)
            except CorralError as exc:  # it runs; what the hook starts does not
                log.warning("booting %s again: %s", sandbox_id, exc.message)
            latest = await self._find(sandbox_id)
            if latest.status is not SandboxStatus.HIBERNATED:  # killed while waking
                await self.runtime.destroy(sandbox_id)
                raise Conflict(f"sandbox {sandbox_id} is {latest.status.value}")
            woken = replace(latest, status=SandboxStatus.RUNNING, last_active_at=self.clock.now(), error=None)
            await self.store.update(woken)
            self.metrics.sandboxes_active.inc()
            log.info("woke %s", sandbox_id)
            return woken

    async def spec(self, sandbox: Sandbox) -> SandboxSpec:
        """How to start ``sandbox`` again: on the template build it was made on."""
        names = self.names
        if sandbox.template_digest:
            template = await names.find(sandbox.org_id, sandbox.template, sandbox.template_digest)
            if template is None:
                raise Conflict(
                    f"the template build {sandbox.template}@{sandbox.template_digest[:12]} of "
                    f"sandbox {sandbox.id} is no longer on this node"
                )
        else:
            template = await names.get(sandbox.org_id, sandbox.template)
        return SandboxSpec(sandbox.id, template, sandbox.limits, dict(sandbox.envs), sandbox.egress)

    async def _find(self, sandbox_id: str) -> Sandbox:
        found = await self.store.find(sandbox_id)
        if found is None:
            raise Conflict(f"sandbox {sandbox_id} is gone")
        return found
