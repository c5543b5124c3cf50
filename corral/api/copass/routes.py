"""The Copass compute routes, under ``/api/v1/storage/sandboxes`` (where ``app.py``
mounts this surface): ``/{sandbox_id}/compute/...``. Thin: parse, one call of
``core.compute`` (services/compute.py), map."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.requests import Request

from corral.api.copass import mapping
from corral.api.copass.auth import CoreDep, PrincipalDep
from corral.api.copass.schemas import (
    CreateSessionIn,
    ExecIn,
    ExecOut,
    HealthOut,
    SessionOut,
    SessionsOut,
    StoppedOut,
    TemplatesOut,
)

router = APIRouter(prefix="/{sandbox_id}/compute", tags=["compute"])


def base_url(request: Request, core: CoreDep) -> str:
    """Where clients reach the gateway: ``public_url`` if set, else this request's origin."""
    if core.settings.public_url:
        return core.settings.public_url.rstrip("/")
    return f"{request.url.scheme}://{request.url.netloc}"


@router.get("/templates", summary="List the templates a session may start")
async def list_templates(
    sandbox_id: str, principal: PrincipalDep, core: CoreDep, provider: str | None = None
) -> TemplatesOut:
    found = await core.compute.templates(principal)
    if provider not in (None, mapping.PROVIDER):
        found = []
    return TemplatesOut(templates=[mapping.template(info) for info in found])


@router.post("/sessions", summary="Create a session")
async def create_session(
    sandbox_id: str, body: CreateSessionIn, principal: PrincipalDep, core: CoreDep, request: Request
) -> SessionOut:
    sandbox = await core.compute.create(principal, sandbox_id, mapping.new_session(body))
    return mapping.session(sandbox, base_url(request, core))


@router.get("/sessions", summary="List the namespace's sessions")
async def list_sessions(
    sandbox_id: str,
    principal: PrincipalDep,
    core: CoreDep,
    request: Request,
    include_stopped: bool = False,
    limit: Annotated[int, Query()] = 100,
) -> SessionsOut:
    found = await core.compute.list(principal, sandbox_id, include_stopped=include_stopped, limit=limit)
    url = base_url(request, core)
    return SessionsOut(sessions=[mapping.session(sandbox, url) for sandbox in found])


@router.get("/sessions/{session_id}", summary="Get a session")
async def get_session(
    sandbox_id: str, session_id: str, principal: PrincipalDep, core: CoreDep, request: Request
) -> SessionOut:
    sandbox = await core.compute.get(principal, sandbox_id, session_id)
    return mapping.session(sandbox, base_url(request, core))


@router.delete("/sessions/{session_id}", summary="Stop a session (idempotent)")
async def stop_session(
    sandbox_id: str, session_id: str, principal: PrincipalDep, core: CoreDep
) -> StoppedOut:
    await core.compute.stop(principal, sandbox_id, session_id)
    return StoppedOut(session_id=session_id)


@router.post("/sessions/{session_id}/exec", summary="Run a command in a session")
async def exec_command(
    sandbox_id: str, session_id: str, body: ExecIn, principal: PrincipalDep, core: CoreDep
) -> ExecOut:
    return mapping.executed(await core.compute.exec(principal, sandbox_id, session_id, mapping.command(body)))


@router.get("/sessions/{session_id}/health", summary="A session's liveness")
async def session_health(
    sandbox_id: str, session_id: str, principal: PrincipalDep, core: CoreDep
) -> HealthOut:
    return mapping.health(await core.compute.get(principal, sandbox_id, session_id))
