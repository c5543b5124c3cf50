"""Routes of the xgen surface (see the package docstring). Handlers are thin."""

from __future__ import annotations

from fastapi import APIRouter, Response, WebSocket
from starlette.requests import Request

from corral.api.guard import admit
from corral.api.xgen import mapping
from corral.api.xgen.auth import CoreDep, PrincipalDep
from corral.api.xgen.connection import Connection
from corral.api.xgen.schemas import (
    CreateBody,
    ErrorOut,
    ExecBody,
    ExecOut,
    SandboxOut,
    ServiceOut,
    TokenBody,
    TokenOut,
)
from corral.auth.principal import Principal
from corral.auth.ratelimit import XGEN
from corral.auth.scopes import Scope, require
from corral.core import Core
from corral.domain import Sandbox
from corral.errors import CorralError, NotFound, Unauthenticated

MISSING_KEY = 'missing api_key: send {"api_key": "ek_<id>_<secret>"}'
KEEPALIVE_S = mapping.DEFAULT_LIFETIME_S

router = APIRouter(
    tags=["xgen"],
    responses={
        400: {"model": ErrorOut, "description": "Invalid request body or parameters"},
        401: {"model": ErrorOut, "description": "Missing or invalid authentication"},
        429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)"},
    },
)
sandboxes = APIRouter(
    prefix="/sandboxes",
    tags=["xgen"],
    responses={
        403: {"model": ErrorOut, "description": "Insufficient permissions"},
        404: {"model": ErrorOut, "description": "Sandbox not found"},
    },
)


@router.post("/auth/token", summary="Exchange an API key for a 15-minute token")
async def exchange_token(request: Request, core: CoreDep, body: TokenBody | None = None) -> TokenOut:
    api_key = (body.api_key if body else None) or ""

    async def authenticate() -> Principal:
        if not api_key.strip():
            raise Unauthenticated(MISSING_KEY)
        return await core.auth.authenticate_key(api_key)

    principal = await admit(request, core, XGEN, authenticate)
    issued = core.auth.issue_user_token(principal)
    return TokenOut(
        token=issued.token, expires_at=mapping.timestamp(issued.expires_at), expires_in=issued.expires_in
    )


async def sandbox_out(core: Core, principal: Principal, sandbox: Sandbox) -> SandboxOut:
    links = await core.previews.list(principal, sandbox.id)
    urls = {
        str(link.preview.port): core.previews.browser_url(sandbox.id, link.preview.port) for link in links
    }
    return mapping.sandbox_out(sandbox, core.settings.base_url, urls, core.desktop.vnc_url(sandbox))


@sandboxes.post("", status_code=201, response_model_exclude_none=True, summary="Create a sandbox")
async def create_sandbox(
    core: CoreDep, principal: PrincipalDep, body: CreateBody | None = None
) -> SandboxOut:
    body = body or CreateBody()
    caps = mapping.capabilities(body.capabilities)
    ports = mapping.ports(body.ports)
    desktop = bool(body.gui) or "browser" in caps
    template = core.desktop.template_for(mapping.template_of(body), desktop=desktop) or "base"
    sandbox = await core.sandboxes.create(principal, mapping.create_request(body, template))
    try:
        await core.workspace.prepare(principal, sandbox.id, sudo="sudo" in caps)
        for port in ports:
            await core.previews.create(principal, sandbox.id, port)
    except CorralError:
        await core.sandboxes.kill(principal, sandbox.id)
        raise
    return await sandbox_out(core, principal, sandbox)


@sandboxes.get("", response_model_exclude_none=True, summary="List sandboxes")
async def list_sandboxes(core: CoreDep, principal: PrincipalDep) -> list[SandboxOut]:
    return [await sandbox_out(core, principal, sb) for sb in await core.sandboxes.list(principal)]


@sandboxes.get("/{sandbox_id}", response_model_exclude_none=True, summary="Get a sandbox")
async def get_sandbox(core: CoreDep, principal: PrincipalDep, sandbox_id: str) -> SandboxOut:
    return await sandbox_out(core, principal, await core.sandboxes.get(principal, sandbox_id))


@sandboxes.delete("/{sandbox_id}", status_code=204, summary="Delete a sandbox (204 also when unknown)")
async def delete_sandbox(core: CoreDep, principal: PrincipalDep, sandbox_id: str) -> Response:
    require(principal, Scope.SANDBOX_DELETE)
    try:
        await core.sandboxes.kill(principal, sandbox_id)
    except NotFound:
        pass
    return Response(status_code=204)


@sandboxes.post("/{sandbox_id}/keepalive", status_code=204, summary="Expire one lifetime from now")
async def keepalive(core: CoreDep, principal: PrincipalDep, sandbox_id: str) -> Response:
    await core.sandboxes.postpone_deadline(principal, sandbox_id, KEEPALIVE_S)
    return Response(status_code=204)


@sandboxes.post("/{sandbox_id}/exec", summary="Run a command and wait for it")
async def exec_command(core: CoreDep, principal: PrincipalDep, sandbox_id: str, body: ExecBody) -> ExecOut:
    request = mapping.exec_request(body)
    result = await core.workspace.run(principal, sandbox_id, request)
    return mapping.exec_out(result, request.timeout_s)


@sandboxes.get("/{sandbox_id}/services", summary="Ports given at create and ports listening")
async def list_services(core: CoreDep, principal: PrincipalDep, sandbox_id: str) -> list[ServiceOut]:
    given = {link.preview.port for link in await core.previews.list(principal, sandbox_id)}
    listening = set(await core.workspace.ports(principal, sandbox_id))
    return [
        ServiceOut(port=p, preview_url=core.previews.browser_url(sandbox_id, p))
        for p in sorted(given | listening)
    ]


@sandboxes.websocket("/{sandbox_id}/ws")
async def connect(ws: WebSocket, core: CoreDep, principal: PrincipalDep, sandbox_id: str) -> None:
    """The multiplexed binary protocol (``connection.py``); ``sandbox:exec``. Errors
    before the upgrade are HTTP answers in the envelope (``errors.py``)."""
    require(principal, Scope.SANDBOX_EXEC)
    await core.sandboxes.processes_of(principal, sandbox_id)  # 404, 409; wakes a hibernated one
    await ws.accept()
    await Connection(ws, core, principal, sandbox_id).serve()


router.include_router(sandboxes)
