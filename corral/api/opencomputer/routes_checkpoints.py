"""Checkpoint, fork and patch routes (control plane only, as in spec 003).

    POST   /sandboxes/{id}/checkpoints                       {name}        201 checkpoint
    GET    /sandboxes/{id}/checkpoints                                     checkpoints, oldest first
    POST   /sandboxes/{id}/checkpoints/{checkpointId}/restore              200 {}
    DELETE /sandboxes/{id}/checkpoints/{checkpointId}                      204
    POST   /sandboxes/from-checkpoint/{checkpointId}         {timeout, envs}  201 sandbox
    POST   /sandboxes/checkpoints/{checkpointId}/patches     {script, description}  201 {patch}
    GET    /sandboxes/checkpoints/{checkpointId}/patches                   patches by sequence
    DELETE /sandboxes/checkpoints/{checkpointId}/patches/{patchId}         204

What a checkpoint is: the sandbox's files (its filesystem changes over its template,
copied while it is frozen: one instant of it) and its configuration (template, limits,
envs, egress policy). **Running processes are not captured**: a fork, or a sandbox
restored in place, starts with fresh processes (this kernel cannot checkpoint process
memory; the format has a slot for it). Contracts and statuses are in
``corral.services.checkpoints`` and ``corral.services.patches``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import (
    CheckpointOut,
    CreateCheckpointBody,
    CreatedPatchOut,
    CreatedSandboxOut,
    CreatePatchBody,
    EmptyOut,
    ForkBody,
    PatchOut,
)
from corral.auth.principal import Principal

NOT_CAPTURED = (
    " Running processes are not captured: the checkpoint holds the sandbox's files and "
    "configuration (template, limits, envs, egress policy), and whatever starts from it "
    "starts with fresh processes."
)


def router(surface: Surface) -> APIRouter:
    r = APIRouter()
    if not surface.control:
        return r
    caller = Depends(surface.principal)

    @r.post(
        "/sandboxes/{sandbox_id}/checkpoints",
        status_code=201,
        summary="Create a checkpoint",
        description="A copy of the sandbox's files as they are now, returned `processing`; it "
        "becomes `ready` once saved (list the checkpoints to see it), or `failed`. The name is "
        "unique per sandbox (409), 1-128 characters (400); at most 10 per sandbox (409)." + NOT_CAPTURED,
    )
    async def create_checkpoint(
        core: CoreDep, sandbox_id: str, body: CreateCheckpointBody, principal: Principal = caller
    ) -> CheckpointOut:
        return mapping.checkpoint_out(await core.checkpoints.create(principal, sandbox_id, body.name))

    @r.get("/sandboxes/{sandbox_id}/checkpoints", summary="List checkpoints")
    async def list_checkpoints(
        core: CoreDep, sandbox_id: str, principal: Principal = caller
    ) -> list[CheckpointOut]:
        return [mapping.checkpoint_out(c) for c in await core.checkpoints.list(principal, sandbox_id)]

    @r.post(
        "/sandboxes/{sandbox_id}/checkpoints/{checkpoint_id}/restore",
        summary="Restore a checkpoint in place",
        description="The sandbox's files become the checkpoint's; every change since is lost. Its "
        "processes are restarted, its configuration is kept, and it runs afterwards (also when it "
        "was hibernated). Checkpoint patches are not run." + NOT_CAPTURED,
    )
    async def restore_checkpoint(
        core: CoreDep, sandbox_id: str, checkpoint_id: str, principal: Principal = caller
    ) -> EmptyOut:
        await core.checkpoints.restore(principal, sandbox_id, checkpoint_id)
        return EmptyOut()

    @r.delete(
        "/sandboxes/{sandbox_id}/checkpoints/{checkpoint_id}", status_code=204, summary="Delete a checkpoint"
    )
    async def delete_checkpoint(
        core: CoreDep, sandbox_id: str, checkpoint_id: str, principal: Principal = caller
    ) -> Response:
        await core.checkpoints.delete(principal, sandbox_id, checkpoint_id)
        return Response(status_code=204)

    @r.post(
        "/sandboxes/from-checkpoint/{checkpoint_id}",
        status_code=201,
        summary="Fork a sandbox from a checkpoint",
        description="A new running sandbox with exactly the checkpoint's files, configuration and "
        "egress policy (`envs` are merged over the checkpoint's). It and the checkpoint's sandbox "
        "never see each other's later writes. The checkpoint's patches then run in it in sequence "
        "order; their outcome is in `patches` (and `error` names a failed one)." + NOT_CAPTURED,
    )
    async def fork(
        core: CoreDep, checkpoint_id: str, body: ForkBody | None = None, principal: Principal = caller
    ) -> CreatedSandboxOut:
        body = body or ForkBody()
        sandbox = await core.checkpoints.fork(
            principal, checkpoint_id, timeout_s=body.timeout, envs=body.envs
        )
        token = core.auth.issue_token(principal, sandbox.id)
        return mapping.created_sandbox_out(
            sandbox, core.settings.base_url, token, core.previews.sandbox_domain, ""
        )

    @r.post(
        "/sandboxes/checkpoints/{checkpoint_id}/patches",
        status_code=201,
        summary="Add a checkpoint patch",
        description="A bash script run as root in every sandbox forked from the checkpoint "
        "afterwards, in sequence order (strategy `on_wake`). Restores do not run patches.",
    )
    async def create_patch(
        core: CoreDep, checkpoint_id: str, body: CreatePatchBody, principal: Principal = caller
    ) -> CreatedPatchOut:
        patch = await core.patches.create(principal, checkpoint_id, body.script, body.description or "")
        return CreatedPatchOut(patch=mapping.patch_out(patch))

    @r.get("/sandboxes/checkpoints/{checkpoint_id}/patches", summary="List checkpoint patches")
    async def list_patches(
        core: CoreDep, checkpoint_id: str, principal: Principal = caller
    ) -> list[PatchOut]:
        return [mapping.patch_out(p) for p in await core.patches.list(principal, checkpoint_id)]

    @r.delete(
        "/sandboxes/checkpoints/{checkpoint_id}/patches/{patch_id}", status_code=204, summary="Delete a patch"
    )
    async def delete_patch(
        core: CoreDep, checkpoint_id: str, patch_id: str, principal: Principal = caller
    ) -> Response:
        await core.patches.delete(principal, checkpoint_id, patch_id)
        return Response(status_code=204)

    return r
