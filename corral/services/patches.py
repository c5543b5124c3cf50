"""Checkpoint patches: bash scripts run inside every sandbox forked from a checkpoint.

Contracts:
- ``create`` needs ``sandbox:write``; ``script`` non-empty, at most 1 MiB (InvalidInput
  naming ``script``), ``description`` at most 1024 characters. The patch gets the
  checkpoint's next sequence number (1, 2, ...; never reused) and strategy ``on_wake``:
  it runs when a sandbox wakes from the checkpoint, that is, in every fork made after
  it was added. Restores and wakes of a hibernated sandbox run no patches.
- ``list`` (``sandbox:read``) is by sequence; ``delete`` is NotFound for an unknown
  patch. Another org's checkpoint is NotFound.
- ``apply`` runs the patches in sequence order, as root (whatever the image's USER),
  each with ``bash -c`` in the sandbox's working directory and a ``PATCH_TIMEOUT_S``
  limit. The first one that exits non-zero (or times out) stops the run: it is
  ``failed`` (exit code and the end of its stderr), the rest ``skipped``. The outcome is
  stored on the sandbox (``patches``; ``error`` names the failed patch) and a failure
  is also an audit event (``sandbox_patch_failed``); the fork itself succeeds, so the
  caller gets the sandbox and can inspect it.
"""

from __future__ import annotations

from dataclasses import replace

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import Checkpoint, ExecRequest, Patch, PatchRun, Sandbox
from corral.errors import CorralError, InvalidInput, NotFound
from corral.ids import is_valid
from corral.ports import CheckpointStore
from corral.services.sandboxes import SandboxService

MAX_SCRIPT = 1 << 20
MAX_DESCRIPTION = 1024
PATCH_TIMEOUT_S = 600
ERROR_TAIL = 2000
PATCH_FAILED = "sandbox_patch_failed"


class PatchService:
    def __init__(self, store: CheckpointStore, sandboxes: SandboxService) -> None:
        self.store = store
        self.sandboxes = sandboxes

    async def create(
        self, principal: Principal, checkpoint_id: str, script: str, description: str = ""
    ) -> Patch:
        require(principal, Scope.SANDBOX_WRITE)
        if not script.strip() or len(script.encode()) > MAX_SCRIPT or "\0" in script:
            raise InvalidInput("script must be a non-empty bash script of at most 1 MiB", field="script")
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(
                f"description must be at most {MAX_DESCRIPTION} characters", field="description"
            )
        checkpoint = await self._checkpoint(principal, checkpoint_id)
        return await self.store.add_patch(checkpoint.org_id, checkpoint.id, script, description)

    async def list(self, principal: Principal, checkpoint_id: str) -> list[Patch]:
        require(principal, Scope.SANDBOX_READ)
        checkpoint = await self._checkpoint(principal, checkpoint_id)
        return await self.store.patches(checkpoint.id)

    async def delete(self, principal: Principal, checkpoint_id: str, patch_id: str) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        checkpoint = await self._checkpoint(principal, checkpoint_id)
        if not is_valid(patch_id, "pa") or not await self.store.remove_patch(checkpoint.id, patch_id):
            raise NotFound(f"patch {patch_id} not found")

    async def apply(self, sandbox: Sandbox, checkpoint: Checkpoint) -> Sandbox:
        """Run the checkpoint's patches in ``sandbox`` (see the module docstring)."""
        patches = await self.store.patches(checkpoint.id)
        if not patches:
            return sandbox
        agent = self.sandboxes.runtime.agent(sandbox.id)
        runs: list[PatchRun] = []
        error = None
        for patch in patches:
            if error is not None:
                runs.append(PatchRun(patch.id, patch.sequence, "skipped"))
                continue
            request = ExecRequest("bash", ("-c", patch.script), timeout_s=PATCH_TIMEOUT_S, user="root")
            try:
                result = await agent.exec(request)
            except CorralError as exc:
                code, detail = None, exc.message
            else:
                code = result.exit_code
                detail = result.stderr.decode(errors="replace")[-ERROR_TAIL:].strip()
                if result.timed_out:
                    detail = f"timed out after {PATCH_TIMEOUT_S} s" + (f": {detail}" if detail else "")
                if code == 0 and not result.timed_out:
                    runs.append(PatchRun(patch.id, patch.sequence, "applied", 0))
                    continue
            runs.append(PatchRun(patch.id, patch.sequence, "failed", code, detail or None))
            how = f"exit code {code}" if code is not None else "could not run"
            error = f"patch {patch.id} (sequence {patch.sequence}) failed: {how}" + (
                f": {detail}" if detail else ""
            )
        current = await self.sandboxes.store.find(sandbox.id) or sandbox
        updated = replace(current, patches=tuple(runs), error=error)
        await self.sandboxes.store.update(updated)
        if error is not None:
            await self.sandboxes.audit.record(
                PATCH_FAILED,
                org_id=sandbox.org_id,
                sandbox_id=sandbox.id,
                data={"checkpoint": checkpoint.id, "error": error},
            )
        return updated

    async def _checkpoint(self, principal: Principal, checkpoint_id: str) -> Checkpoint:
        return await visible_checkpoint(self.store, principal, checkpoint_id)


async def visible_checkpoint(store: CheckpointStore, principal: Principal, checkpoint_id: str) -> Checkpoint:
    """The checkpoint, if ``principal`` may see its sandbox; NotFound otherwise (also for
    a malformed id)."""
    if not is_valid(checkpoint_id, "cp"):
        raise NotFound(f"checkpoint {checkpoint_id} not found")
    checkpoint = await store.get(principal.org_id, checkpoint_id)
    if not principal.may_see(checkpoint.sandbox_id):
        raise NotFound(f"checkpoint {checkpoint_id} not found")
    return checkpoint
