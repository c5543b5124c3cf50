"""The E2B control plane's routes (what the ``e2b`` SDK's ``e2b.api.client`` calls),
thin: parse, call one service, map. Errors are raised as ``CorralError`` and rendered
by ``errors``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Response
from fastapi import status as http
from starlette.requests import Request

from corral.api.e2b import mapping
from corral.api.e2b.auth import CoreDep, PrincipalDep
from corral.api.e2b.schemas import (
    ConnectBody,
    ErrorOut,
    ListedSandboxOut,
    LogsOut,
    LogsV2Out,
    MetricOut,
    NewSandbox,
    ResumeBody,
    SandboxDetailOut,
    SandboxOut,
    TimeoutBody,
)
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import Sandbox
from corral.errors import Conflict, InvalidInput, NotFound

MAX_PAGE = 1000
LOG_LINES = 1000
router = APIRouter(
    responses={code: {"model": ErrorOut} for code in (400, 401, 403, 404, 409, 429, 500)},
)


def domain(request: Request, core: Core) -> str:
    """The ``domain`` under which ``get_host(port)`` names a sandbox's port: the gateway's
    domain, with the port the client reached corral on (``{port}-{id}.<domain>`` is then
    a gateway host of this server)."""
    host = request.headers.get("host", "")
    port = host.rpartition(":")[2] if host.rfind(":") > host.rfind("]") else ""
    return core.settings.gateway_domain + (f":{port}" if port.isdigit() else "")


def token(core: Core, principal: Principal, sandbox: Sandbox) -> str:
    """The sandbox's envd access token: a worker token of it (``caller``)."""
    return core.auth.issue_token(principal, sandbox.id)


# ---- create, get, list, kill -----------------------------------------------------------


@router.post("/sandboxes", status_code=http.HTTP_201_CREATED)
@router.post("/v2/sandboxes", status_code=http.HTTP_201_CREATED)
async def create(body: NewSandbox, request: Request, core: CoreDep, principal: PrincipalDep) -> SandboxOut:
    sandbox = await core.sandboxes.create(principal, mapping.create_request(body))
    return mapping.sandbox_out(sandbox, token(core, principal, sandbox), domain(request, core))


@router.get("/sandboxes/{sandbox_id}")
async def get(sandbox_id: str, request: Request, core: CoreDep, principal: PrincipalDep) -> SandboxDetailOut:
    sandbox = await core.sandboxes.get(principal, sandbox_id)
    return mapping.detail_out(sandbox, domain(request, core))


@router.get("/sandboxes")
async def list_v1(
    core: CoreDep, principal: PrincipalDep, metadata: str | None = None
) -> list[ListedSandboxOut]:
    return [mapping.listed_out(sb) for sb in await _listed(core, principal, metadata, None)]


@router.get("/v2/sandboxes")
async def list_v2(
    response: Response,
    core: CoreDep,
    principal: PrincipalDep,
    metadata: str | None = None,
    state: str | None = None,
    nextToken: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> list[ListedSandboxOut]:
    """A page in start order; ``X-Next-Token`` names the next one (an offset)."""
    found = await _listed(core, principal, metadata, state)
    if nextToken is not None and not nextToken.isdigit():
        raise InvalidInput("nextToken must be a value of X-Next-Token", field="nextToken")
    start = int(nextToken or 0)
    if start + limit < len(found):
        response.headers["X-Next-Token"] = str(start + limit)
    return [mapping.listed_out(sb) for sb in found[start : start + limit]]


@router.delete("/sandboxes/{sandbox_id}", status_code=http.HTTP_204_NO_CONTENT)
async def kill(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> None:
    mapping.state_of(await core.sandboxes.get(principal, sandbox_id))  # NotFound once gone
    await core.sandboxes.kill(principal, sandbox_id)


# ---- timeout, pause, resume, connect -------------------------------------------------


@router.post("/sandboxes/{sandbox_id}/timeout", status_code=http.HTTP_204_NO_CONTENT)
async def set_timeout(sandbox_id: str, body: TimeoutBody, core: CoreDep, principal: PrincipalDep) -> None:
    await _current(core, principal, sandbox_id)
    await core.sandboxes.set_timeout(principal, sandbox_id, body.timeout)


@router.post("/sandboxes/{sandbox_id}/refreshes", status_code=http.HTTP_204_NO_CONTENT)
async def refresh(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> None:
    """Counts as use: its timeout starts again."""
    sandbox = await _current(core, principal, sandbox_id)
    await core.sandboxes.set_timeout(principal, sandbox_id, sandbox.timeout_s)


@router.post("/sandboxes/{sandbox_id}/pause", status_code=http.HTTP_204_NO_CONTENT)
async def pause(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> None:
    """409 when already paused (the SDK's ``pause`` then answers False)."""
    if mapping.state_of(await _current(core, principal, sandbox_id)) == "paused":
        raise Conflict(f"sandbox {sandbox_id} is already paused")
    await core.lifecycle.pause(principal, sandbox_id)


@router.post("/sandboxes/{sandbox_id}/resume", status_code=http.HTTP_201_CREATED)
async def resume(
    sandbox_id: str, request: Request, core: CoreDep, principal: PrincipalDep, body: ResumeBody | None = None
) -> SandboxOut:
    """409 for a running sandbox (E2B's answer)."""
    if mapping.state_of(await _current(core, principal, sandbox_id)) == "running":
        raise Conflict(f"sandbox {sandbox_id} is already running")
    sandbox = await _resumed(core, principal, sandbox_id, body.timeout if body else None)
    return mapping.sandbox_out(sandbox, token(core, principal, sandbox), domain(request, core))


@router.post("/sandboxes/{sandbox_id}/connect")
@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect(
    sandbox_id: str,
    request: Request,
    response: Response,
    core: CoreDep,
    principal: PrincipalDep,
    body: ConnectBody | None = None,
) -> SandboxOut:
    """200 for a running sandbox, 201 for a paused one resumed; a fresh access token."""
    sandbox = await _current(core, principal, sandbox_id)
    timeout = body.timeout if body else None
    if mapping.state_of(sandbox) == "paused":
        sandbox = await _resumed(core, principal, sandbox_id, timeout)
        response.status_code = http.HTTP_201_CREATED
    elif timeout is not None:
        sandbox = await core.sandboxes.set_timeout(principal, sandbox_id, timeout)
    return mapping.sandbox_out(sandbox, token(core, principal, sandbox), domain(request, core))


# ---- metrics, logs ---------------------------------------------------------------------


@router.get("/sandboxes/{sandbox_id}/metrics")
async def metrics(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> list[MetricOut]:
    sandbox = await _current(core, principal, sandbox_id)
    if mapping.state_of(sandbox) == "paused":
        return []
    usage, disk = await core.workspace.usage(principal, sandbox_id)
    return [mapping.metric_out(sandbox, usage, disk, core.sandboxes.clock.now())]


@router.get("/sandboxes/{sandbox_id}/logs")
async def logs(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> LogsOut:
    """The sandbox's audit trail, oldest first (``audit:read``: admins and owners)."""
    page = await core.audit.sandbox_trail(principal, sandbox_id, limit=LOG_LINES, newest=False)
    return LogsOut(
        logs=[mapping.log_line(e) for e in page.events],
        logEntries=[mapping.log_entry(e) for e in page.events],
    )


@router.get("/v2/sandboxes/{sandbox_id}/logs")
async def logs_v2(sandbox_id: str, core: CoreDep, principal: PrincipalDep) -> LogsV2Out:
    page = await core.audit.sandbox_trail(principal, sandbox_id, limit=LOG_LINES, newest=False)
    return LogsV2Out(logs=[mapping.log_entry(e) for e in page.events])


# ---- helpers -----------------------------------------------------------------------------


async def _current(core: Core, principal: Principal, sandbox_id: str) -> Sandbox:
    """The sandbox while running or paused (NotFound otherwise)."""
    sandbox = await core.sandboxes.get(principal, sandbox_id)
    mapping.state_of(sandbox)
    return sandbox


async def _resumed(core: Core, principal: Principal, sandbox_id: str, timeout: int | None) -> Sandbox:
    """A paused (or hibernated) sandbox running again, with its new timeout if given."""
    sandbox = await core.lifecycle.resume(principal, sandbox_id)
    if timeout is not None:
        sandbox = await core.sandboxes.set_timeout(principal, sandbox_id, timeout)
    return sandbox


async def _listed(core: Core, principal: Principal, metadata: str | None, state: str | None) -> list[Sandbox]:
    """The org's running and paused sandboxes, in start order, filtered by ``metadata``
    (``k=v&k2=v2``, URL-encoded) and ``state`` (``running,paused``)."""
    wanted = dict(parse_qsl(metadata or "", keep_blank_values=True))
    states = {s for s in (state or "").split(",") if s}
    if states - {"running", "paused"}:
        raise InvalidInput("state must be running and/or paused", field="state")
    found = []
    for sandbox in await core.sandboxes.list(principal):
        try:
            current = mapping.state_of(sandbox)
        except NotFound:
            continue
        if states and current not in states:
            continue
        if all(sandbox.metadata.get(k) == v for k, v in wanted.items()):
            found.append(sandbox)
    return sorted(found, key=lambda sb: sb.created_at)
