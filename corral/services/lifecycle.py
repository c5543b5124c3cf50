"""Hibernate and wake, and the deadline: keepalive and extend.

Hibernating a sandbox stops its processes and frees its memory, cgroups, mounts and
network, and keeps its disk; it keeps its id and shows ``hibernated``. Waking starts it
again on that disk, with its configuration and egress policy: the same files, fresh
processes (process memory is not kept: no CRIU on this kernel).

Contracts:
- ``hibernate`` needs ``sandbox:write``; Conflict unless the sandbox runs or is already
  hibernated (then it is a no-op answering the same). Returns the kept disk's key and
  size.
- ``wake`` needs ``sandbox:write``; Conflict for a stopped sandbox; a running one is a
  no-op. ``timeout`` (optional) becomes its idle timeout.
- ``awake`` (what every request that needs a running sandbox goes through:
  ``SandboxService.agent_for``) wakes a hibernated sandbox. Wakes are single-flight per
  sandbox: concurrent requests share one wake, which runs as its own task (a client
  that disconnects does not cancel it). When ``wake_in_background`` is set for the
  current request (the OpenComputer surface sets it for ``X-OSB-Async-Wake: 1``), it
  starts the wake and raises SandboxWaking at once instead of waiting.
- Hibernate, wake, restore (``services/checkpoints.py``) and reconcile's parking of a
  sandbox are serialised per sandbox by ``lock``.
- ``keepalive`` (spec 002's keepalive: at least ``seconds`` more from now, default an
  hour) and ``extend`` (spec 004's extend: ``seconds`` more, default 15 minutes, on top
  of the current deadline, so repeated calls stack) set ``hold_until``: the idle timeout
  does not hibernate the sandbox before it. Both need ``sandbox:write`` and a running
  or hibernated sandbox (neither wakes it); ``POST .../timeout`` clears the hold.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import Sandbox, SandboxSpec, SandboxStatus
from corral.errors import Conflict, CorralError, InvalidInput, SandboxWaking
from corral.pausepoints import pause
from corral.ports import Snapshotter
from corral.services.audit import AuditKind
from corral.services.sandboxes import SandboxService, end_at

log = logging.getLogger("corral.lifecycle")

wake_in_background: ContextVar[bool] = ContextVar("corral_wake_in_background", default=False)
KEEPALIVE_S = 3600
EXTEND_S = 900
MAX_HOLD_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Hibernation:
    sandbox_id: str
    key: str  # where the kept disk is, relative to the data dir
    size_bytes: int
    status: SandboxStatus


class LifecycleService:
    def __init__(self, sandboxes: SandboxService, snapshots: Snapshotter) -> None:
        self.sandboxes = sandboxes
        self.snapshots = snapshots
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._waking: dict[str, asyncio.Task[Sandbox]] = {}
        sandboxes.waker = self

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        """Held by every operation that stops and starts a sandbox on its disk."""
        lock = self._locks.get(sandbox_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[sandbox_id] = lock
        return lock

    # ---- hibernate -------------------------------------------------------------------

    async def hibernate(self, principal: Principal, sandbox_id: str) -> Hibernation:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        result = await self._hibernate(sandbox.id)
        await self.sandboxes.audit.record_for(principal, AuditKind.HIBERNATED, sandbox_id)
        return result

    async def idle_out(self, sandbox: Sandbox) -> None:
        """The reaper's hibernate; a failure stops the sandbox instead (logged)."""
        try:
            await self._hibernate(sandbox.id)
        except Conflict:
            return  # it stopped or was hibernated meanwhile
        except CorralError as exc:
            log.warning("idle hibernate of %s failed (%s); stopping it", sandbox.id, exc.message)
            current = await self.sandboxes.store.find(sandbox.id) or sandbox
            await self.sandboxes.stop(current, f"idle timeout; hibernating failed: {exc.message}")
            return
        await self.sandboxes.audit.record(
            AuditKind.HIBERNATED,
            org_id=sandbox.org_id,
            sandbox_id=sandbox.id,
            data={"reason": "idle timeout"},
        )

    async def _hibernate(self, sandbox_id: str) -> Hibernation:
        async with self.lock(sandbox_id):
            current = await self._find(sandbox_id)
            if current.status is SandboxStatus.HIBERNATED:
                size = await self.sandboxes.runtime.hibernate(sandbox_id)  # idempotent
                return self._answer(sandbox_id, size)
            if not current.live:
                raise Conflict(f"sandbox {sandbox_id} is {current.status.value}")
            size = await self.sandboxes.runtime.hibernate(sandbox_id)
            await pause("hibernate.stopped")
            await self.mark_hibernated(current, None)
            return self._answer(sandbox_id, size)

    async def mark_hibernated(self, sandbox: Sandbox, reason: str | None) -> None:
        """Record a parked sandbox as hibernated (its activity flushed into the row)."""
        touched = self.sandboxes.settle(await self.sandboxes.store.find(sandbox.id) or sandbox)
        await self.sandboxes.store.update(replace(touched, status=SandboxStatus.HIBERNATED, error=reason))
        self.sandboxes.metrics.sandboxes_active.dec()
        log.info("hibernated %s%s", sandbox.id, f" ({reason})" if reason else "")
        self.sandboxes.hub.sandbox_stopped.publish(sandbox.id)

    def _answer(self, sandbox_id: str, size: int) -> Hibernation:
        return Hibernation(sandbox_id, f"sandboxes/{sandbox_id}/disk", size, SandboxStatus.HIBERNATED)

    # ---- wake ------------------------------------------------------------------------

    async def wake(self, principal: Principal, sandbox_id: str, timeout_s: int | None = None) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        if timeout_s is not None and not 0 <= timeout_s <= 30 * 24 * 3600:
            raise InvalidInput("timeout must be between 0 and 2592000 seconds", field="timeout")
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if sandbox.status is SandboxStatus.HIBERNATED:
            sandbox = await asyncio.shield(self._wake_task(sandbox.id))
            await self.sandboxes.audit.record_for(principal, AuditKind.WOKEN, sandbox_id)
        elif not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        if timeout_s is not None:
            sandbox = await self.sandboxes.set_timeout(principal, sandbox_id, timeout_s)
        return sandbox

    async def awake(self, sandbox: Sandbox) -> Sandbox:
        """See the module docstring (single-flight; SandboxWaking in background mode)."""
        if sandbox.status is not SandboxStatus.HIBERNATED:
            return sandbox
        task = self._wake_task(sandbox.id)
        if wake_in_background.get():
            raise SandboxWaking(f"sandbox {sandbox.id} is hibernated and waking up; retry shortly")
        return await asyncio.shield(task)

    def _wake_task(self, sandbox_id: str) -> asyncio.Task[Sandbox]:
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
            if current.live:
                return current
            if current.status is not SandboxStatus.HIBERNATED:
                raise Conflict(f"sandbox {sandbox_id} is {current.status.value}")
            async with self.sandboxes.admission.promise(0, current.limits.memory_mb):
                await self.sandboxes.runtime.resume(await self.spec(current))
            try:
                await self.sandboxes.booted(sandbox_id, current.template)
            except CorralError as exc:  # it runs; what the hook starts does not
                log.warning("booting %s again: %s", sandbox_id, exc.message)
            latest = await self._find(sandbox_id)
            if latest.status is not SandboxStatus.HIBERNATED:  # killed while waking
                await self.sandboxes.runtime.destroy(sandbox_id)
                raise Conflict(f"sandbox {sandbox_id} is {latest.status.value}")
            woken = replace(
                latest, status=SandboxStatus.RUNNING, last_active_at=self.sandboxes.clock.now(), error=None
            )
            await self.sandboxes.store.update(woken)
            self.sandboxes.metrics.sandboxes_active.inc()
            log.info("woke %s", sandbox_id)
            return woken

    async def spec(self, sandbox: Sandbox) -> SandboxSpec:
        """How to start ``sandbox`` again: on the template build it was made on."""
        names = self.sandboxes.names  # the org's templates and the built-ins, no other
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

    # ---- deadline --------------------------------------------------------------------

    async def keepalive(self, principal: Principal, sandbox_id: str, seconds: int = KEEPALIVE_S) -> Sandbox:
        now = self.sandboxes.clock.now()
        return await self._hold(principal, sandbox_id, seconds, lambda sb: now)

    async def extend(self, principal: Principal, sandbox_id: str, seconds: int = EXTEND_S) -> Sandbox:
        now = self.sandboxes.clock.now()
        return await self._hold(principal, sandbox_id, seconds, lambda sb: max(now, end_at(sb) or now))

    async def _hold(
        self, principal: Principal, sandbox_id: str, seconds: int, base: Callable[[Sandbox], datetime]
    ) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        if not 0 < seconds <= MAX_HOLD_S:
            raise InvalidInput(f"seconds must be between 1 and {MAX_HOLD_S}", field="seconds")
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if not sandbox.live and sandbox.status is not SandboxStatus.HIBERNATED:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        hold = base(sandbox) + timedelta(seconds=seconds)
        if sandbox.hold_until is not None:
            hold = max(hold, sandbox.hold_until)
        current = await self._find(sandbox_id)
        updated = replace(current, hold_until=hold)
        await self.sandboxes.store.update(updated)
        return await self.sandboxes.visible(principal, sandbox_id)

    async def _find(self, sandbox_id: str) -> Sandbox:
        found = await self.sandboxes.store.find(sandbox_id)
        if found is None:
            raise Conflict(f"sandbox {sandbox_id} is gone")
        return found
