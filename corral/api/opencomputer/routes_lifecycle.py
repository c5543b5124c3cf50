"""Pause, resume, hibernate, wake and keepalive, and how requests wake sandboxes.

    POST /sandboxes/{id}/pause        control plane  the sandbox, paused (corral's own)
    POST /sandboxes/{id}/resume       control plane  the sandbox, running (corral's own)
    POST /sandboxes/{id}/hibernate    control plane  {sandboxID, hibernationKey, sizeBytes, status}
    POST /sandboxes/{id}/wake         control plane  {timeout?}  the sandbox, running
    POST /sandboxes/{id}/keepalive    both           204: not idled out for another hour
                                                     (spec 002's keepalive)

Hibernation keeps the sandbox's disk and frees its memory, processes, cgroups and
network; ``hibernationKey`` names the kept disk (``sandboxes/<id>/disk``) and
``sizeBytes`` is what it occupies. Running processes are not kept: a woken sandbox has
its files, configuration and egress policy, and fresh processes.

A pause freezes the sandbox's processes where they are (the cgroup freezer): they keep
their memory and use no CPU; a resume thaws them. Pausing a sandbox that is not running
(hibernated, stopped) and resuming a running or stopped one are 409, naming its state;
resuming a hibernated one wakes it (the idle timeout hibernates a sandbox paused long
enough).

Any request that needs a running sandbox (exec, files, PTY, ports) resumes a paused
one and wakes a hibernated one first, and waits for it. With ``X-OSB-Async-Wake: 1`` (the TypeScript SDK sends it)
the request answers ``503 {"waking": true, "error": ...}`` at once instead, the wake
goes on in the background, and the client retries: ``wake_preference`` is the
dependency of every route of this surface that reads the header.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from starlette.requests import HTTPConnection

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import HibernateOut, SandboxOut, WakeBody
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import Sandbox
from corral.services.lifecycle import wake_in_background

ASYNC_WAKE_HEADER = "x-osb-async-wake"


async def wake_preference(conn: HTTPConnection) -> None:
    """Whether this request wants hibernated sandboxes woken in the background."""
    wake_in_background.set(conn.headers.get(ASYNC_WAKE_HEADER, "").strip() in ("1", "true"))


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}")
    caller = Depends(surface.principal)

    if surface.control:

        @r.post(
            "/pause",
            summary="Pause a sandbox",
            description="Freezes its processes where they are: they keep their memory and use no CPU. "
            "Status `paused`; any request that needs it resumes it. 409 unless it is running (a paused "
            "one is a no-op).",
        )
        async def pause(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> SandboxOut:
            return _out(core, principal, await core.lifecycle.pause(principal, sandbox_id))

        @r.post(
            "/resume",
            summary="Resume a paused sandbox",
            description="Thaws its processes, with their memory as it was. A hibernated sandbox is "
            "woken (fresh processes). 409 for a running or stopped one.",
        )
        async def resume(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> SandboxOut:
            return _out(core, principal, await core.lifecycle.resume(principal, sandbox_id))

        @r.post(
            "/hibernate",
            summary="Hibernate a sandbox",
            description="Stops its processes and frees its memory, cgroups and network; keeps its disk "
            "and id. Status `hibernated`; any request that needs it wakes it. Running processes are not "
            "kept.",
        )
        async def hibernate(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> HibernateOut:
            return mapping.hibernate_out(await core.lifecycle.hibernate(principal, sandbox_id))

        @r.post(
            "/wake",
            summary="Wake a hibernated sandbox",
            description="Starts it again on its kept disk (same files, configuration and egress "
            "policy; fresh processes). `timeout` becomes its idle timeout. A running sandbox is a no-op.",
        )
        async def wake(
            core: CoreDep, sandbox_id: str, body: WakeBody | None = None, principal: Principal = caller
        ) -> SandboxOut:
            timeout = body.timeout if body else None
            return _out(core, principal, await core.lifecycle.wake(principal, sandbox_id, timeout))

    @r.post(
        "/keepalive",
        status_code=204,
        summary="Keep a sandbox from idling out",
        description="It is not hibernated for idleness for at least another hour. Does not wake it.",
    )
    async def keepalive(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> Response:
        await core.lifecycle.keepalive(principal, sandbox_id)
        return Response(status_code=204)

    return r


def _out(core: Core, principal: Principal, sandbox: Sandbox) -> SandboxOut:
    token = core.auth.issue_token(principal, sandbox.id)
    return mapping.sandbox_out(sandbox, core.settings.base_url, token, core.previews.sandbox_domain)
