"""Sandbox lifecycle: create, list, get, kill, idle timeout, reconcile.

Contracts:
- Every call is scoped by the principal's org; another org's sandbox, or any sandbox
  but its own for a worker token, is NotFound.
- ``create`` is all-or-nothing: the runtime undoes its own steps on failure, and the
  row is written only once the sandbox runs (a crash in between leaves an unowned
  sandbox that ``reconcile`` removes). Its template is a built-in or one of the org's
  own (``names``, services/template_names.py); any other name is NotFound.
- ``kill`` is idempotent for a sandbox that is already stopped. It answers once the
  sandbox's processes are dead (``Runtime.discard``); its network, mounts and disk are
  removed in the background, and by reconcile's reclaim after a crash.
- ``agent_for`` gives the agent of a running sandbox (Conflict if it is not running)
  and records activity, which defers the idle timeout; ``touch`` records activity
  without a lookup (the gateway calls it for every request it forwards). A sandbox
  seen running is remembered for ``RUNNING_CACHE_S`` seconds, so an exec reads nothing
  from the store; stopping or hibernating it in this process forgets it at once (in
  another process sharing the store, within that time). A sandbox paused in this
  process is remembered as such (``remember_paused``) until it is used, so the use that
  resumes it reads nothing from the store either (the resume's write checks that it is
  still paused).
- The id of each sandbox that stops (kill, idle timeout, reconcile) is published on
  ``hub.sandbox_stopped`` after it stopped; caches drop it there (``forget_running``
  is this service's own).
- Pause and hibernation (``services/hibernator.py``, given as ``waker``;
  ``snapshotter``): ``agent_for`` resumes a paused sandbox and wakes a hibernated one
  first (waiting for it, or raising SandboxWaking when the request asked for a
  background wake); the idle timeout pauses instead of stopping, and hibernates a
  paused sandbox idle ``settings.paused_idle_s`` longer (with ``paused_idle_s`` 0, or
  when the pause fails, it hibernates at once; never before ``hold_until``: keepalive,
  extend);
  ``kill`` of a hibernated sandbox removes its disk; ``list`` shows running and
  hibernated sandboxes; ``reconcile`` keeps hibernated sandboxes whose disk is here,
  keeps paused sandboxes paused (frozen again, should a crash have thawed them), thaws
  the others a crash left frozen, and hibernates a live sandbox whose container is
  gone but whose disk is intact (its processes are lost, its files are not).
- A deadline (``CreateSandbox.lifetime_s`` -> ``Sandbox.deadline_at``): the reaper stops
  and removes the sandbox once it has passed (its next pass comes at the earliest
  deadline of a live sandbox, if that is before ``reaper_interval_s``), whatever
  its activity, with the reason ``deadline``; a sandbox with a deadline is never
  hibernated for idleness (its idle timeout stops it), so no parked sandbox outlives it.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.clock import SYSTEM, Clock
from corral.domain import (
    LIVE_STATUSES,
    EgressPolicy,
    Limits,
    RuntimeState,
    Sandbox,
    SandboxSpec,
    SandboxStatus,
)
from corral.domain.usage import Usage
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.ids import is_valid, new_id
from corral.metrics import Metrics
from corral.ports import (
    Agent,
    Files,
    Processes,
    Runtime,
    SandboxStore,
    Snapshotter,
    TemplateBuildStore,
    Templates,
)
from corral.services.activity import Activity
from corral.services.admission import Admission
from corral.services.audit import AuditKind, AuditService
from corral.services.hub import Hub
from corral.services.standby import Standby
from corral.services.template_names import TemplateNames
from corral.settings import Settings

log = logging.getLogger("corral.sandboxes")

RUNNING_CACHE_S = 5.0
_MAX_RUNNING_CACHED = 10_000
RECONCILE_CONCURRENCY = 16  # sandboxes looked at at once by the start-up reconcile
ASLEEP = (SandboxStatus.PAUSED, SandboxStatus.HIBERNATED)  # whatever uses them wakes them first
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MAX_ENVS = 256
MAX_METADATA = 64
MAX_CPU_SECONDS = 30 * 24 * 3600


# Called with (sandbox id, template name) each time a sandbox's processes start, before
# it is reported running (services/desktop.py's DesktopBoot); an error undoes a create.
BootHook = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True)
class CreateSandbox:
    """A create request; None means the setting's default."""

    template: str | None = None
    cpu_count: int | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    pids: int | None = None  # processes and threads at once (the pids cgroup)
    timeout_s: int | None = None
    lifetime_s: int | None = None  # stopped and removed this long after the create; None: never
    cpu_seconds: float | None = None  # a CPU-time quota (Limits.cpu_seconds); None: none
    envs: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    preview_token_hash: str | None = None  # hash of the preview token (services.previews)
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # validated at the edge (network.policy)


@dataclass(frozen=True)
class ReconcileReport:
    running: list[str]
    marked_stopped: list[str]
    reclaimed: list[str]
    hibernated: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)


class Waker(Protocol):
    """What the sandbox service needs of pause and hibernation (``services/hibernator.py``)."""

    async def awake(self, sandbox: Sandbox) -> Sandbox:
        """``sandbox`` running: resumed or woken first if it is paused or hibernated
        (see ``agent_for``)."""

    async def idle_pause(self, sandbox: Sandbox) -> str | None:
        """Pause a sandbox whose idle timeout passed; why that failed, if it did."""

    async def idle_out(self, sandbox: Sandbox) -> str | None:
        """Hibernate a sandbox whose idle timeout passed; why that failed, if it did."""

    async def mark_hibernated(self, sandbox: Sandbox, reason: str) -> None:
        """Record a sandbox found parked (by reconcile) as hibernated."""


def check_envs(envs: dict[str, str], field_name: str = "envs") -> dict[str, str]:
    """Validate environment variables: POSIX-ish names, no NUL bytes."""
    if len(envs) > MAX_ENVS:
        raise InvalidInput(f"{field_name}: at most {MAX_ENVS} variables", field=field_name)
    for name, value in envs.items():
        if not ENV_NAME.match(name):
            raise InvalidInput(f"{field_name}: invalid variable name {name!r}", field=field_name)
        if "\0" in value or len(value) > 128 * 1024:
            raise InvalidInput(f"{field_name}.{name}: invalid value", field=field_name)
    return dict(envs)


def default_limits(settings: Settings) -> Limits:
    """The limits of a create that asks for none."""
    return Limits(1, settings.default_memory_mb, settings.default_disk_mb, settings.pids_limit)


def end_at(sandbox: Sandbox) -> datetime | None:
    """When the idle timeout pauses the sandbox if nothing touches it (never before its
    ``hold_until``; for a paused one, when it was paused or would have been); None =
    never."""
    if not sandbox.live or sandbox.timeout_s <= 0:
        return None
    idle_end = sandbox.last_active_at + timedelta(seconds=sandbox.timeout_s)
    return max(idle_end, sandbox.hold_until) if sandbox.hold_until else idle_end


class SandboxService:
    def __init__(
        self,
        store: SandboxStore,
        runtime: Runtime,
        templates: Templates,
        settings: Settings,
        *,
        audit: AuditService,
        metrics: Metrics,
        admission: Admission,
        builds: TemplateBuildStore,
        hub: Hub,
        activity: Activity,
        waker: Waker | None = None,
        standby: Standby | None = None,
        snapshotter: Snapshotter | None = None,
        boot_hooks: Sequence[BootHook] = (),
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.templates = templates
        self.names = TemplateNames(templates, builds)  # what a template name means to an org
        self.settings = settings
        self.audit = audit
        self.metrics = metrics
        self.admission = admission
        self.hub = hub
        self.clock = clock  # every reading of the time here and in lifecycle, checkpoints
        self.activity = activity  # last uses not yet written (services/activity.py)
        self._reaper: asyncio.Task[None] | None = None
        self._next_deadline: datetime | None = None  # the earliest deadline of a live sandbox
        self._deadline_set = asyncio.Event()  # wakes the reaper to count its sleep again
        self._running: dict[str, tuple[float, str]] = {}  # id -> (monotonic until, org id)
        self._paused: dict[str, Sandbox] = {}  # paused in this process, not used since
        self.boot_hooks = tuple(boot_hooks)  # run by ``booted``
        self.standby = standby  # sandboxes started ahead (services/standby.py)
        self.snapshotter = snapshotter  # disks kept and parked, when the runtime can
        self.waker = waker  # hibernation, when the runtime keeps disks

    # ---- lifecycle -------------------------------------------------------------------

    async def create(self, principal: Principal, req: CreateSandbox) -> Sandbox:
        """Forbidden without ``sandbox:create``; Unavailable while the kill switch is
        engaged; Conflict when the org is at its cap of live sandboxes (``admission``)."""
        require(principal, Scope.SANDBOX_CREATE)
        if principal.sandbox_id is not None:
            raise NotFound("sandbox creation is not a worker route")
        started = time.perf_counter()
        limits = self.limits_of(req)
        async with self.admission.slot(principal.org_id, limits):
            sandbox = await self._create(principal, req, limits)
        self.metrics.sandbox_created(time.perf_counter() - started)
        await self.audit.record_for(
            principal,
            AuditKind.SANDBOX_CREATED,
            sandbox.id,
            template=sandbox.template,
            cpu_count=sandbox.limits.cpu_count,
            memory_mb=sandbox.limits.memory_mb,
        )
        return sandbox

    def limits_of(self, req: CreateSandbox) -> Limits:
        """The limits a create asks for, checked against the settings (InvalidInput
        naming the field)."""
        s = self.settings
        default = default_limits(s)
        return Limits(
            cpu_seconds=_cpu_seconds(req.cpu_seconds),
            cpu_count=_bounded(req.cpu_count, s.max_cpu_count, default.cpu_count, 1, "cpuCount"),
            memory_mb=_bounded(req.memory_mb, s.max_memory_mb, default.memory_mb, 64, "memoryMB"),
            disk_mb=_bounded(req.disk_mb, s.max_disk_mb, default.disk_mb, 64, "diskMB"),
            pids=_bounded(req.pids, s.pids_limit, default.pids, 16, "pids"),
        )

    async def _create(self, principal: Principal, req: CreateSandbox, limits: Limits) -> Sandbox:
        s = self.settings
        timeout_s = s.default_timeout_s if req.timeout_s is None else req.timeout_s
        if not 0 <= timeout_s <= 30 * 24 * 3600:
            raise InvalidInput("timeout must be between 0 and 2592000 seconds", field="timeout")
        if req.lifetime_s is not None and not 1 <= req.lifetime_s <= 30 * 24 * 3600:
            raise InvalidInput("lifetime must be between 1 and 2592000 seconds", field="lifetime")
        envs = check_envs(req.envs)
        metadata = _check_metadata(req.metadata)
        name = req.template or s.default_template
        template = await self.names.get(principal.org_id, name)
        standby = self.standby
        sandbox_id = await standby.take(template, limits, envs, req.egress) if standby else None
        if sandbox_id is None:
            sandbox_id = new_id("sb")
            await self.runtime.create(SandboxSpec(sandbox_id, template, limits, envs, req.egress))
        try:
            await self.booted(sandbox_id, name)
        except BaseException:
            await asyncio.shield(self.runtime.destroy(sandbox_id))
            raise
        now = self.clock.now()
        sandbox = Sandbox(
            id=sandbox_id,
            org_id=principal.org_id,
            template=name,
            status=SandboxStatus.RUNNING,
            limits=limits,
            envs=envs,
            metadata=metadata,
            timeout_s=timeout_s,
            created_at=now,
            last_active_at=now,
            preview_token_hash=req.preview_token_hash,
            egress=req.egress,
            template_digest=template.digest,
            deadline_at=None if req.lifetime_s is None else now + timedelta(seconds=req.lifetime_s),
        )
        if sandbox.deadline_at is not None:
            self._deadline_at(sandbox.deadline_at)
        await self.add_started(sandbox)
        self._running[sandbox_id] = (self.clock.monotonic() + RUNNING_CACHE_S, principal.org_id)
        log.info("created %s (template %s, org %s)", sandbox_id, name, principal.org_id)
        return sandbox

    async def booted(self, sandbox_id: str, template: str) -> None:
        """Run the boot hooks for a sandbox whose processes just started (create, wake,
        fork, restore; its agent answers), before it is reported running. Their errors
        propagate: the caller undoes the start."""
        for hook in self.boot_hooks:
            await hook(sandbox_id, template)

    async def add_started(self, sandbox: Sandbox) -> None:
        """Write the row of a sandbox the runtime has started; if that fails, the
        sandbox is destroyed (a create or fork is all-or-nothing)."""
        try:
            await self.store.add(sandbox)
        except BaseException:
            await asyncio.shield(self.runtime.destroy(sandbox.id))
            raise

    async def get(self, principal: Principal, sandbox_id: str) -> Sandbox:
        require(principal, Scope.SANDBOX_READ)
        return await self.visible(principal, sandbox_id)

    async def visible(self, principal: Principal, sandbox_id: str) -> Sandbox:
        """The sandbox, if ``principal`` may see it (NotFound otherwise), needing no
        scope: for services that required their own."""
        if not is_valid(sandbox_id, "sb") or not principal.may_see(sandbox_id):
            raise NotFound(f"sandbox {sandbox_id} not found")
        return self.activity.applied(await self.store.get(principal.org_id, sandbox_id))

    async def list(
        self,
        principal: Principal,
        *,
        live_only: bool = True,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Sandbox]:
        """The org's sandboxes in creation order: with ``live_only``, the live and the
        hibernated ones (they keep their id and wake on use), picked by the store (not
        every sandbox the org ever had); with ``limit``, one page of at most that many,
        the one after sandbox ``after`` (InvalidInput naming ``cursor`` if it is not
        the org's)."""
        require(principal, Scope.SANDBOX_READ)
        statuses = (*LIVE_STATUSES, SandboxStatus.HIBERNATED) if live_only else None
        found = await self.store.list(principal.org_id, statuses=statuses, limit=limit, after=after)
        return [self.activity.applied(sb) for sb in found if principal.may_see(sb.id)]

    async def kill(self, principal: Principal, sandbox_id: str) -> None:
        require(principal, Scope.SANDBOX_DELETE)
        sandbox = await self.visible(principal, sandbox_id)
        if sandbox.live or sandbox.status is SandboxStatus.HIBERNATED:
            await self._stop(sandbox, reason=None)
            await self.audit.record_for(principal, AuditKind.SANDBOX_KILLED, sandbox_id)

    async def set_timeout(self, principal: Principal, sandbox_id: str, timeout_s: int) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        if not 0 <= timeout_s <= 30 * 24 * 3600:
            raise InvalidInput("timeout must be between 0 and 2592000 seconds", field="timeout")
        sandbox = await self.visible(principal, sandbox_id)
        if not sandbox.live and sandbox.status is not SandboxStatus.HIBERNATED:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        updated = replace(sandbox, timeout_s=timeout_s, last_active_at=self.clock.now(), hold_until=None)
        await self.store.update(updated)
        self.activity.forget(sandbox_id)
        return updated

    async def postpone_deadline(self, principal: Principal, sandbox_id: str, seconds: int) -> Sandbox:
        """Move a running sandbox's deadline to ``seconds`` from now, never earlier than
        it was (a sandbox without one gets one). Forbidden without ``sandbox:write``;
        Conflict unless it is live; InvalidInput naming ``seconds`` out of 1 s - 30 days."""
        require(principal, Scope.SANDBOX_WRITE)
        if not 1 <= seconds <= 30 * 24 * 3600:
            raise InvalidInput("seconds must be between 1 and 2592000", field="seconds")
        sandbox = await self.visible(principal, sandbox_id)
        if not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        deadline = self.clock.now() + timedelta(seconds=seconds)
        if sandbox.deadline_at is not None:
            deadline = max(deadline, sandbox.deadline_at)
        updated = replace(sandbox, deadline_at=deadline)
        await self.store.update(updated)
        return updated

    async def agent_for(self, principal: Principal, sandbox_id: str) -> Agent:
        seen = self._running.get(sandbox_id)
        if seen is None or seen[0] < self.clock.monotonic() or seen[1] != principal.org_id:
            paused = self._paused.get(sandbox_id)
            if paused is not None and paused.org_id == principal.org_id and principal.may_see(sandbox_id):
                sandbox = paused  # as this process paused it; resuming it checks that it still is
            else:
                sandbox = await self.visible(principal, sandbox_id)
            if sandbox.status in ASLEEP and self.waker is not None:
                sandbox = await self.waker.awake(sandbox)
            if not sandbox.live:
                raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
            self._seen_running(sandbox)
        elif not principal.may_see(sandbox_id):
            raise NotFound(f"sandbox {sandbox_id} not found")
        self.activity.touch(sandbox_id)
        return self.runtime.agent(sandbox_id)

    async def processes_of(self, principal: Principal, sandbox_id: str) -> Processes:
        """``agent_for``, narrowed to the sandbox's processes (commands, sessions, ports)."""
        return await self.agent_for(principal, sandbox_id)

    async def files_of(self, principal: Principal, sandbox_id: str) -> Files:
        """``agent_for``, narrowed to the sandbox's files."""
        return await self.agent_for(principal, sandbox_id)

    async def usage(self, principal: Principal, sandbox_id: str) -> Usage:
        """What the org's sandbox used and which of its limits it hit, as the host
        counted it (``Runtime.usage``); NotFound for another org's or once it is gone."""
        require(principal, Scope.SANDBOX_READ)
        await self.visible(principal, sandbox_id)
        return await self.runtime.usage(sandbox_id)

    def forget_running(self, sandbox_id: str) -> None:
        """Drop ``sandbox_id`` from the sandboxes seen running or paused (it stopped)."""
        self._running.pop(sandbox_id, None)
        self._paused.pop(sandbox_id, None)

    def remember_paused(self, sandbox: Sandbox) -> None:
        """``sandbox`` was just paused in this process (``hub.sandbox_paused``)."""
        if len(self._paused) >= _MAX_RUNNING_CACHED:
            self._paused.clear()
        self._paused[sandbox.id] = sandbox

    def touch(self, sandbox_id: str) -> None:
        """Record activity of a sandbox the caller already knows to be running."""
        self.activity.touch(sandbox_id)

    async def use(self, sandbox_id: str) -> None:
        """Record activity of a sandbox reached on a connection opened before (the
        gateway's relayed WebSockets), resuming it first if it has been paused since;
        while it is seen running (``RUNNING_CACHE_S``), a lookup in memory."""
        seen = self._running.get(sandbox_id)
        if seen is None or seen[0] < self.clock.monotonic():
            sandbox = await self.store.find(sandbox_id)
            if sandbox is not None and sandbox.status is SandboxStatus.PAUSED and self.waker is not None:
                sandbox = await self.waker.awake(sandbox)
            if sandbox is not None and sandbox.status is SandboxStatus.RUNNING:
                self._seen_running(sandbox)
        self.activity.touch(sandbox_id)

    def _seen_running(self, sandbox: Sandbox) -> None:
        """Remember ``sandbox`` as running for ``RUNNING_CACHE_S``."""
        self._paused.pop(sandbox.id, None)
        if len(self._running) >= _MAX_RUNNING_CACHED:
            self._running.clear()
        self._running[sandbox.id] = (self.clock.monotonic() + RUNNING_CACHE_S, sandbox.org_id)

    async def running(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.visible(principal, sandbox_id)
        if not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        return sandbox

    async def _stop(self, sandbox: Sandbox, reason: str | None) -> None:
        self.forget_running(sandbox.id)
        # Returns once its processes are dead; the runtime finishes the teardown in the
        # background (reconcile's reclaim does, should corral stop first).
        await self.runtime.discard(sandbox.id)
        self.activity.forget(sandbox.id)
        await self.store.mark_stopped(sandbox.id, self.clock.now(), reason)
        log.info("stopped %s%s", sandbox.id, f" ({reason})" if reason else "")
        self.metrics.sandbox_stopped()
        if sandbox.status is SandboxStatus.HIBERNATED:
            self.metrics.sandboxes_active.inc()  # a hibernated sandbox was not counted live
        if reason is not None:
            await self.audit.record(
                AuditKind.SANDBOX_STOPPED,
                org_id=sandbox.org_id,
                sandbox_id=sandbox.id,
                data={"reason": reason},
            )
        self.hub.sandbox_stopped.publish(sandbox.id)

    async def stop(self, sandbox: Sandbox, reason: str) -> None:
        """Stop ``sandbox`` for a reason of corral's own (another service decided it)."""
        await self._stop(sandbox, reason)

    # ---- background work -------------------------------------------------------------

    async def reconcile(self) -> ReconcileReport:
        """Make the store and this node agree, at start-up.

        Live rows whose sandbox runs and answers stay running, paused rows whose
        container is here stay paused (frozen); the others are hibernated (their disk
        intact) or marked stopped. Everything on the node that no live row owns is removed.
        """
        started = time.perf_counter()
        found: dict[str, builtins.list[str]] = {"running": [], "stopped": [], "hibernated": [], "paused": []}
        gate = asyncio.Semaphore(RECONCILE_CONCURRENCY)  # a node of 1,000: seconds, not minutes

        async def one(sandbox: Sandbox) -> str | None:
            async with gate:
                return await self._reconciled(sandbox)

        rows = await self.store.list_all()
        for sandbox, outcome in zip(rows, await asyncio.gather(*map(one, rows)), strict=True):
            if outcome is not None:
                found[outcome].append(sandbox.id)
        running, stopped, hibernated, paused = (
            found[k] for k in ("running", "stopped", "hibernated", "paused")
        )
        reclaimed = await self.runtime.reclaim({*running, *hibernated, *paused})
        self.metrics.sandboxes_active.set(len(running) + len(paused))
        if stopped or reclaimed:
            log.warning("reconcile: marked stopped %s, reclaimed %s", stopped, reclaimed)
        log.info(
            "reconcile: %d running, %d paused, %d hibernated, %d stopped, %d reclaimed in %.2f s",
            *map(len, (running, paused, hibernated, stopped, reclaimed)),
            time.perf_counter() - started,
        )
        return ReconcileReport(running, stopped, reclaimed, hibernated, paused)

    async def _reconciled(self, sandbox: Sandbox) -> str | None:
        """What ``reconcile`` made of one row: "running", "paused", "hibernated",
        "stopped", or None (a row of a sandbox that had ended)."""
        if sandbox.status is SandboxStatus.HIBERNATED:
            if self.snapshotter is not None and await self.snapshotter.has_disk(sandbox.id):
                return "hibernated"
            await self._stop(sandbox, reason="its disk was lost while corral was down")
            return "stopped"
        if not sandbox.live:
            return None
        if sandbox.status is SandboxStatus.PAUSED:
            if await self._frozen_again(sandbox):
                return "paused"
        elif await self._answers(sandbox):
            return "running"
        if await self._park_lost(sandbox):
            return "hibernated"
        await self._stop(sandbox, reason="sandbox was lost while corral was down")
        return "stopped"

    async def _answers(self, sandbox: Sandbox) -> bool:
        """Whether a running sandbox's container runs and its agent answers (thawed
        first: a crash in the middle of a checkpoint leaves it frozen)."""
        if self.snapshotter is not None:
            try:
                await self.snapshotter.recover(sandbox.id)
            except CorralError as exc:
                log.warning("reconcile: could not thaw %s: %s", sandbox.id, exc.message)
        if await self.runtime.state(sandbox.id) != RuntimeState.RUNNING:
            return False
        try:
            await asyncio.wait_for(self.runtime.agent(sandbox.id).ping(), 5)
        except (CorralError, TimeoutError):
            return False
        return True

    async def _frozen_again(self, sandbox: Sandbox) -> bool:
        """Whether a paused sandbox's container is still here, frozen (again: a crash
        between a thaw and its row's update leaves it thawed). Its agent is not asked."""
        if await self.runtime.state(sandbox.id) != RuntimeState.RUNNING:
            return False
        try:
            await self.runtime.freeze(sandbox.id)
        except CorralError as exc:
            log.warning("reconcile: could not freeze paused %s: %s", sandbox.id, exc.message)
            return False
        return True

    async def _park_lost(self, sandbox: Sandbox) -> bool:
        """A live sandbox whose processes are gone: hibernated if its disk is intact."""
        if self.snapshotter is None or self.waker is None:
            return False
        if not await self.snapshotter.has_disk(sandbox.id):
            return False
        try:
            await self.runtime.hibernate(sandbox.id)
        except CorralError as exc:
            log.warning("reconcile: could not park %s: %s", sandbox.id, exc.message)
            return False
        await self.waker.mark_hibernated(sandbox, "its processes were lost while corral was down")
        return True

    async def reap_idle(self) -> builtins.list[str]:
        """Stop every live sandbox past its deadline; pause every running one idle for
        longer than its timeout and past its ``hold_until`` and hibernate every paused one
        idle for ``paused_idle_s`` longer still (without hibernation, or with a deadline:
        stop it at its timeout); flush activity."""
        now = self.clock.now()
        reaped: builtins.list[str] = []
        self._next_deadline = None  # counted again below (and by creates meanwhile)
        live = await self.store.list_all(live_only=True)
        used = {
            sandbox.id: seen for sandbox in live if (seen := self.activity.forget(sandbox.id)) is not None
        }
        await self.store.touch(used)  # one transaction, however many were used
        for sandbox in live:
            seen = used.get(sandbox.id)
            if sandbox.deadline_at is not None and sandbox.deadline_at <= now:
                await self._stop(sandbox, reason="deadline")
                reaped.append(sandbox.id)
                continue
            if sandbox.deadline_at is not None:
                self._deadline_at(sandbox.deadline_at)
            last = max(seen, sandbox.last_active_at) if seen is not None else sandbox.last_active_at
            held = sandbox.hold_until is not None and sandbox.hold_until > now
            idle_s = sandbox.timeout_s
            if sandbox.status is SandboxStatus.PAUSED:
                idle_s += self.settings.paused_idle_s
            if sandbox.timeout_s > 0 and (now - last).total_seconds() > idle_s and not held:
                await self._idle_out(sandbox)
                reaped.append(sandbox.id)
        return reaped

    async def _idle_out(self, sandbox: Sandbox) -> None:
        """Pause ``sandbox``, whose idle timeout passed, or hibernate it (paused already,
        ``paused_idle_s`` 0, or the pause failed); stop it without hibernation, or when
        hibernating fails."""
        if self.waker is None or sandbox.deadline_at is not None:  # a deadline: stopped, never kept
            await self._stop(sandbox, reason="idle timeout")
            return
        pausing = sandbox.status is SandboxStatus.RUNNING and self.settings.paused_idle_s > 0
        if pausing and await self.waker.idle_pause(sandbox) is None:
            return
        failed = await self.waker.idle_out(sandbox)
        if failed is not None:
            current = await self.store.find(sandbox.id) or sandbox
            await self._stop(current, f"idle timeout; hibernating failed: {failed}")

    def _deadline_at(self, deadline: datetime) -> None:
        """A live sandbox's deadline: the reaper passes then at the latest."""
        if self._next_deadline is None or deadline < self._next_deadline:
            self._next_deadline = deadline
            self._deadline_set.set()

    async def _until_next_pass(self) -> None:
        """Sleeps ``reaper_interval_s``, or until the earliest deadline of a live sandbox
        if that comes first (one set meanwhile wakes it to count again)."""
        due = self.clock.monotonic() + self.settings.reaper_interval_s
        while True:
            wait = due - self.clock.monotonic()
            if self._next_deadline is not None:
                wait = min(wait, (self._next_deadline - self.clock.now()).total_seconds())
            if wait <= 0:
                return
            self._deadline_set.clear()
            try:
                await asyncio.wait_for(self._deadline_set.wait(), wait)
            except TimeoutError:
                return

    def start_reaper(self) -> None:
        async def loop() -> None:
            while True:
                await self._until_next_pass()
                try:
                    await self.reap_idle()
                except Exception:  # keep reaping whatever one sandbox did
                    log.exception("idle reaper failed")

        self._reaper = asyncio.create_task(loop(), name="corral-reaper")

    async def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            try:
                await self._reaper
            except asyncio.CancelledError:
                pass
            self._reaper = None
        await self.store.touch(dict(self.activity.drain()))


def _bounded(value: int | None, maximum: int, default: int, minimum: int, name: str) -> int:
    if value is None:
        return default
    if not minimum <= value <= maximum:
        raise InvalidInput(f"{name} must be between {minimum} and {maximum}", field=name)
    return value


def _cpu_seconds(value: float | None) -> float | None:
    if value is None:
        return None
    if not 0 < value <= MAX_CPU_SECONDS:  # NaN too
        raise InvalidInput(f"cpuSeconds must be above 0 and at most {MAX_CPU_SECONDS}", field="cpuSeconds")
    return float(value)


def _check_metadata(metadata: dict[str, str]) -> dict[str, str]:
    if len(metadata) > MAX_METADATA:
        raise InvalidInput(f"metadata: at most {MAX_METADATA} keys", field="metadata")
    for key, value in metadata.items():
        if not key or len(key) > 256 or len(value) > 4096:
            raise InvalidInput(f"metadata: key or value too long: {key!r}", field="metadata")
    return dict(metadata)
