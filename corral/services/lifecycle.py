"""Pause and resume, hibernate and wake on request, and the deadline: keepalive and extend.

Pausing a sandbox freezes its processes where they are (the cgroup freezer): they keep
their memory and use no CPU, and it shows ``paused``; resuming it thaws them, in a
millisecond or two. Any use of a paused sandbox (exec, files, PTY, the gateway) resumes
it first, as it wakes a hibernated one.

Hibernating a sandbox stops its processes and frees its memory, cgroups, mounts and
network, and keeps its disk; it keeps its id and shows ``hibernated``. Waking starts it
again on that disk, with its configuration and egress policy: the same files, fresh
processes. How: ``services/hibernator.py``, shared with the sandbox service, checkpoints
and the gateway.

Contracts:
- ``pause`` needs ``sandbox:write``; Conflict naming the state unless the sandbox runs
  or is already paused (then it is a no-op answering the same).
- ``resume`` needs ``sandbox:write``; a paused sandbox is thawed, a hibernated one woken
  (the idle timeout hibernates a sandbox left paused long enough: its processes are then
  started anew); Conflict naming the state for a running or stopped one.
- ``hibernate`` needs ``sandbox:write``; Conflict unless the sandbox runs or is already
  hibernated (then it is a no-op answering the same). Returns the kept disk's key and
  size.
- ``wake`` needs ``sandbox:write``; Conflict for a stopped sandbox; a running one is a
  no-op, a paused one is resumed. ``timeout`` (optional) becomes its idle timeout. Wakes are single-flight
  (``Hibernator.awake``).
- ``keepalive`` (spec 002's keepalive: at least ``seconds`` more from now, default an
  hour) and ``extend`` (spec 004's extend: ``seconds`` more, default 15 minutes, on top
  of the current deadline, so repeated calls stack) set ``hold_until``: the idle timeout
  does not hibernate the sandbox before it. Both need ``sandbox:write`` and a running
  or hibernated sandbox (neither wakes it); ``POST .../timeout`` clears the hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import Sandbox, SandboxStatus
from corral.errors import Conflict, InvalidInput
from corral.ports import Snapshotter
from corral.services.audit import AuditKind
from corral.services.hibernator import Hibernator, wake_in_background
from corral.services.sandboxes import SandboxService, end_at

__all__ = ["EXTEND_S", "KEEPALIVE_S", "Hibernation", "LifecycleService", "wake_in_background"]

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
    def __init__(self, sandboxes: SandboxService, hibernator: Hibernator, snapshots: Snapshotter) -> None:
        self.sandboxes = sandboxes
        self.hibernator = hibernator
        self.snapshots = snapshots  # the disks' snapshots (checkpoints use them through here)

    # ---- pause and resume ------------------------------------------------------------

    async def pause(self, principal: Principal, sandbox_id: str) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if sandbox.status is SandboxStatus.PAUSED:
            return sandbox
        paused = await self.hibernator.pause(sandbox.id)
        await self.sandboxes.audit.record_for(principal, AuditKind.PAUSED, sandbox_id)
        return paused

    async def resume(self, principal: Principal, sandbox_id: str) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if sandbox.status not in (SandboxStatus.PAUSED, SandboxStatus.HIBERNATED):
            raise Conflict(
                f"sandbox {sandbox_id} is {sandbox.status.value}; only a paused one can be resumed"
            )
        if sandbox.status is SandboxStatus.PAUSED:
            sandbox = await asyncio.shield(self.hibernator.unpause(sandbox))
        if sandbox.status is SandboxStatus.HIBERNATED:  # hibernated, maybe after it was paused
            sandbox = await asyncio.shield(self.hibernator.wake_task(sandbox.id))
        if not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        await self.sandboxes.audit.record_for(principal, AuditKind.RESUMED, sandbox_id)
        return sandbox

    # ---- hibernate -------------------------------------------------------------------

    async def hibernate(self, principal: Principal, sandbox_id: str) -> Hibernation:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        size = await self.hibernator.hibernate(sandbox.id)
        await self.sandboxes.audit.record_for(principal, AuditKind.HIBERNATED, sandbox_id)
        return Hibernation(sandbox_id, f"sandboxes/{sandbox_id}/disk", size, SandboxStatus.HIBERNATED)

    # ---- wake ------------------------------------------------------------------------

    async def wake(self, principal: Principal, sandbox_id: str, timeout_s: int | None = None) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        if timeout_s is not None and not 0 <= timeout_s <= 30 * 24 * 3600:
            raise InvalidInput("timeout must be between 0 and 2592000 seconds", field="timeout")
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if sandbox.status is SandboxStatus.PAUSED:
            sandbox = await asyncio.shield(self.hibernator.unpause(sandbox))
        if sandbox.status is SandboxStatus.HIBERNATED:
            sandbox = await asyncio.shield(self.hibernator.wake_task(sandbox.id))
            await self.sandboxes.audit.record_for(principal, AuditKind.WOKEN, sandbox_id)
        elif not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        if timeout_s is not None:
            sandbox = await self.sandboxes.set_timeout(principal, sandbox_id, timeout_s)
        return sandbox

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
