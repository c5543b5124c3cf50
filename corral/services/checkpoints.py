"""Checkpoints: named copies of a sandbox's files and configuration; restore, fork.

A checkpoint holds the sandbox's filesystem changes (its writable layer, copied while
the sandbox is frozen, so it is one instant of it) and its configuration (template
build, limits, envs, egress policy, metadata). It never holds running processes: a
fork or a restore starts with fresh processes. Files are under
``<data>/checkpoints/<id>/`` (``runtime/checkpoint_dirs.py`` has the format).

Contracts:
- ``create`` needs ``sandbox:write`` and a running or hibernated sandbox (Conflict
  otherwise). ``name``: 1..128 characters, no control characters (InvalidInput naming
  ``name``), unique per sandbox (Conflict naming ``name``; a *failed* checkpoint's name
  may be reused: it is replaced). At most ``MAX_PER_SANDBOX`` checkpoints that are not
  failed per sandbox (Conflict beyond: delete one first). The copy is made before
  ``create`` returns, so it holds every write that finished before the call; the
  checkpoint is returned ``processing`` and becomes ``ready`` once it is durable (fsync,
  in the background) or ``failed``. A copy that fails is recorded ``failed`` and raised.
- ``restore`` needs ``sandbox:write``: the sandbox's files become the checkpoint's
  (every change since is lost), its processes are restarted, its configuration
  (envs, egress policy, timeout) is kept, and it ends up running (also when it was
  hibernated). Patches are not run: a restore is the checkpoint exactly.
- ``fork`` needs ``sandbox:create``: a new running sandbox with exactly the
  checkpoint's files, configuration and egress policy (``envs`` given are merged over
  the checkpoint's; ``timeout`` as for create); it and the parent never see each other's
  later writes (separate copies). Then the checkpoint's patches run in it in sequence
  order (``services/patches.py``); their outcome is on the sandbox (``patches``, and
  ``error`` for a failure), not an error of the fork.
- ``restore`` and ``fork`` of a checkpoint still ``processing`` wait for it to finish;
  of a ``failed`` one: Conflict. Checkpoints of another org, or not of the sandbox in
  the path, are NotFound. ``delete`` is NotFound for an unknown checkpoint.
- ``recover`` (at start-up) marks checkpoints a crash left ``processing`` as failed and
  removes their files and every file no checkpoint owns: nothing half-made survives.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
import weakref
from dataclasses import replace

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import Checkpoint, CheckpointStatus, Sandbox, SandboxConfig, SandboxSpec, SandboxStatus
from corral.errors import Conflict, CorralError, InvalidInput, NotFound
from corral.ids import new_id
from corral.ports import CheckpointFiles, CheckpointStore, Snapshotter
from corral.services.audit import AuditKind
from corral.services.lifecycle import LifecycleService
from corral.services.patches import PatchService, visible_checkpoint
from corral.services.sandboxes import check_envs

log = logging.getLogger("corral.checkpoints")

MAX_PER_SANDBOX = 10
MAX_NAME = 128


class CheckpointService:
    def __init__(
        self,
        store: CheckpointStore,
        dirs: CheckpointFiles,
        lifecycle: LifecycleService,
        patches: PatchService,
    ) -> None:
        self.store = store
        self.dirs = dirs
        self.lifecycle = lifecycle
        self.sandboxes = lifecycle.sandboxes
        self.snapshots: Snapshotter = lifecycle.snapshots
        self.hibernator = lifecycle.hibernator  # its lock, and how to start a sandbox again
        self.patches = patches
        self._persisting: dict[str, asyncio.Task[Checkpoint]] = {}
        self._creating: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    # ---- create, list, delete --------------------------------------------------------

    async def create(self, principal: Principal, sandbox_id: str, name: str) -> Checkpoint:
        require(principal, Scope.SANDBOX_WRITE)
        name = _check_name(name)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        creating = self._creating.get(sandbox.id)
        if creating is None:
            creating = asyncio.Lock()
            self._creating[sandbox.id] = creating
        async with creating:
            existing = await self.store.list(sandbox.org_id, sandbox.id)
            for old in existing:
                if old.name == name and old.status is CheckpointStatus.FAILED:
                    await self._remove(old)
            kept = [c for c in existing if c.status is not CheckpointStatus.FAILED]
            if any(c.name == name for c in kept):
                raise Conflict(f"sandbox {sandbox.id} already has a checkpoint named {name!r}", field="name")
            if len(kept) >= MAX_PER_SANDBOX:
                raise Conflict(
                    f"sandbox {sandbox.id} has {len(kept)} checkpoints, the most allowed; delete one first"
                )
            async with self.hibernator.lock(sandbox.id):
                current = await self.sandboxes.visible(principal, sandbox.id)
                if not current.live and current.status is not SandboxStatus.HIBERNATED:
                    raise Conflict(f"sandbox {sandbox.id} is {current.status.value}")
                digest = (
                    current.template_digest
                    or (await self.sandboxes.names.get(current.org_id, current.template)).digest
                )
                checkpoint = Checkpoint(
                    id=new_id("cp"),
                    org_id=current.org_id,
                    sandbox_id=current.id,
                    name=name,
                    status=CheckpointStatus.PROCESSING,
                    config=_config(current, digest),
                    created_at=self.sandboxes.clock.now(),
                )
                await self.store.add(checkpoint)
                try:
                    staging = await self.dirs.stage(checkpoint.id)
                    size = await self.snapshots.snapshot(current.id, staging)
                except (CorralError, OSError) as exc:
                    await self._fail(checkpoint, str(getattr(exc, "message", exc)))
                    raise
        checkpoint = replace(checkpoint, size_bytes=size)
        task = asyncio.create_task(self._persist(checkpoint), name=f"persist-{checkpoint.id}")
        self._persisting[checkpoint.id] = task
        task.add_done_callback(lambda _: self._persisting.pop(checkpoint.id, None))
        await self.sandboxes.audit.record_for(
            principal, AuditKind.CHECKPOINT, sandbox.id, checkpoint=checkpoint.id, name=name
        )
        return checkpoint

    async def _persist(self, checkpoint: Checkpoint) -> Checkpoint:
        try:
            await self.dirs.commit(checkpoint, self.sandboxes.runtime.name)
            ready = replace(checkpoint, status=CheckpointStatus.READY)
            await self.store.update(ready)
            return ready
        except (CorralError, OSError) as exc:
            log.warning("checkpoint %s could not be saved: %s", checkpoint.id, exc)
            return await self._fail(checkpoint, f"could not be saved: {exc}")

    async def _fail(self, checkpoint: Checkpoint, error: str) -> Checkpoint:
        failed = replace(checkpoint, status=CheckpointStatus.FAILED, error=error)
        await self.dirs.discard(checkpoint.id)
        await self.store.update(failed)
        return failed

    async def list(self, principal: Principal, sandbox_id: str) -> list[Checkpoint]:
        """Oldest first (also of a stopped sandbox)."""
        require(principal, Scope.SANDBOX_READ)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        return await self.store.list(sandbox.org_id, sandbox.id)

    async def get(self, principal: Principal, checkpoint_id: str) -> Checkpoint:
        require(principal, Scope.SANDBOX_READ)
        return await self._visible(principal, checkpoint_id)

    async def delete(self, principal: Principal, sandbox_id: str, checkpoint_id: str) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        checkpoint = await self._of_sandbox(principal, sandbox_id, checkpoint_id)
        task = self._persisting.get(checkpoint.id)
        if task is not None:
            await asyncio.shield(task)
        await self._remove(checkpoint)

    async def _remove(self, checkpoint: Checkpoint) -> None:
        await self.store.remove(checkpoint.id)  # first: no fork may start from it now
        await self.dirs.discard(checkpoint.id)

    # ---- restore, fork ---------------------------------------------------------------

    async def restore(self, principal: Principal, sandbox_id: str, checkpoint_id: str) -> Sandbox:
        require(principal, Scope.SANDBOX_WRITE)
        checkpoint = await self._ready(await self._of_sandbox(principal, sandbox_id, checkpoint_id))
        async with self.hibernator.lock(checkpoint.sandbox_id):
            sandbox = await self.sandboxes.visible(principal, sandbox_id)
            if not sandbox.live and sandbox.status is not SandboxStatus.HIBERNATED:
                raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
            spec = await self.hibernator.spec(sandbox)
            waking = sandbox.status is SandboxStatus.HIBERNATED  # its memory is promised again
            async with self.sandboxes.admission.promise(0, sandbox.limits.memory_mb if waking else 0):
                try:
                    await self.sandboxes.runtime.hibernate(sandbox.id)
                    await self.snapshots.restore(sandbox.id, self.dirs.path(checkpoint.id))
                    await self.sandboxes.runtime.resume(spec)
                except CorralError as exc:
                    if await self.snapshots.has_disk(sandbox.id):
                        await self.hibernator.mark_hibernated(sandbox, f"restore failed: {exc.message}")
                    raise
            try:
                await self.sandboxes.booted(sandbox.id, sandbox.template)
            except CorralError as exc:  # it runs; what the hook starts does not
                log.warning("booting %s again after a restore: %s", sandbox.id, exc.message)
            current = await self.sandboxes.store.find(sandbox.id) or sandbox
            restored = replace(
                current, status=SandboxStatus.RUNNING, last_active_at=self.sandboxes.clock.now()
            )
            await self.sandboxes.store.update(restored)
        await self.sandboxes.audit.record_for(
            principal, "sandbox.restored", sandbox_id, checkpoint=checkpoint.id
        )
        return restored

    async def fork(
        self,
        principal: Principal,
        checkpoint_id: str,
        *,
        timeout_s: int | None = None,
        envs: dict[str, str] | None = None,
    ) -> Sandbox:
        require(principal, Scope.SANDBOX_CREATE)
        if principal.sandbox_id is not None:
            raise NotFound("sandbox creation is not a worker route")
        checkpoint = await self._ready(await self._visible(principal, checkpoint_id))
        config = checkpoint.config
        merged = {**config.envs, **check_envs(dict(envs or {}))}
        timeout = self.sandboxes.settings.default_timeout_s if timeout_s is None else timeout_s
        if not 0 <= timeout <= 30 * 24 * 3600:
            raise InvalidInput("timeout must be between 0 and 2592000 seconds", field="timeout")
        template = await self.sandboxes.names.find(checkpoint.org_id, config.template, config.template_digest)
        if template is None:
            raise Conflict(
                f"the template build {config.template}@{config.template_digest[:12]} of checkpoint "
                f"{checkpoint.id} is no longer on this node"
            )
        started = time.perf_counter()
        async with self.sandboxes.admission.slot(principal.org_id, config.limits):
            sandbox_id = new_id("sb")
            spec = SandboxSpec(sandbox_id, template, config.limits, merged, config.egress)
            await self.snapshots.fork(sandbox_id, self.dirs.path(checkpoint.id))
            try:
                await self.sandboxes.runtime.resume(spec, forked=True)
                await self.sandboxes.booted(sandbox_id, config.template)
            except BaseException:
                await asyncio.shield(self.sandboxes.runtime.destroy(sandbox_id))
                raise
            now = self.sandboxes.clock.now()
            sandbox = Sandbox(
                id=sandbox_id,
                org_id=principal.org_id,
                template=config.template,
                status=SandboxStatus.RUNNING,
                limits=config.limits,
                envs=merged,
                metadata=dict(config.metadata),
                timeout_s=timeout,
                created_at=now,
                last_active_at=now,
                egress=config.egress,
                template_digest=template.digest,
                checkpoint_id=checkpoint.id,
            )
            await self.sandboxes.add_started(sandbox)
            self.sandboxes.metrics.sandbox_created(time.perf_counter() - started)
        await self.sandboxes.audit.record_for(
            principal,
            AuditKind.SANDBOX_CREATED,
            sandbox_id,
            template=config.template,
            checkpoint=checkpoint.id,
        )
        return await self.patches.apply(sandbox, checkpoint)

    # ---- start-up --------------------------------------------------------------------

    async def recover(self) -> builtins.list[str]:
        """See the module docstring; returns the ids of checkpoints marked failed."""
        failed = []
        keep = set()
        for checkpoint in await self.store.list_all():
            if checkpoint.status is CheckpointStatus.PROCESSING:
                await self._fail(checkpoint, "interrupted by a restart of corral")
                failed.append(checkpoint.id)
            elif checkpoint.status is CheckpointStatus.READY:
                if await self.dirs.exists(checkpoint.id):
                    keep.add(checkpoint.id)
                else:
                    await self._fail(checkpoint, "its files are gone")
                    failed.append(checkpoint.id)
        swept = await self.dirs.sweep(keep)
        if failed or swept:
            log.warning("checkpoints: marked failed %s, removed files of %s", failed, swept)
        return failed

    # ---- helpers ---------------------------------------------------------------------

    async def _visible(self, principal: Principal, checkpoint_id: str) -> Checkpoint:
        return await visible_checkpoint(self.store, principal, checkpoint_id)

    async def _of_sandbox(self, principal: Principal, sandbox_id: str, checkpoint_id: str) -> Checkpoint:
        await self.sandboxes.visible(principal, sandbox_id)
        checkpoint = await self._visible(principal, checkpoint_id)
        if checkpoint.sandbox_id != sandbox_id:
            raise NotFound(f"checkpoint {checkpoint_id} not found")
        return checkpoint

    async def _ready(self, checkpoint: Checkpoint) -> Checkpoint:
        task = self._persisting.get(checkpoint.id)
        if task is not None:
            checkpoint = await asyncio.shield(task)
        elif checkpoint.status is CheckpointStatus.PROCESSING:
            # Read while its saving was still under way, which has since ended (the task
            # leaves ``_persisting`` only after its outcome is stored): read the outcome.
            checkpoint = await self.store.get(checkpoint.org_id, checkpoint.id)
        if checkpoint.status is not CheckpointStatus.READY:
            why = f": {checkpoint.error}" if checkpoint.error else ""
            raise Conflict(f"checkpoint {checkpoint.id} is {checkpoint.status.value}{why}")
        return checkpoint


def _check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME:
        raise InvalidInput(f"name must be 1 to {MAX_NAME} characters", field="name")
    if not name.isprintable():
        raise InvalidInput("name must not contain control characters", field="name")
    return name


def _config(sandbox: Sandbox, digest: str) -> SandboxConfig:
    return SandboxConfig(
        template=sandbox.template,
        template_digest=digest,
        limits=sandbox.limits,
        envs=dict(sandbox.envs),
        egress=sandbox.egress,
        metadata=dict(sandbox.metadata),
    )
