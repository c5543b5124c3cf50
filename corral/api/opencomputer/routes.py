"""Routes of the OpenComputer surface: sandbox lifecycle here, and the whole router.

``router(CONTROL)`` is mounted at ``/api``, ``router(WORKER)`` at the root. Both carry
the operational routes (exec, agent sessions, files, PTY, get, timeout, open ports); only the control
plane creates, lists and kills sandboxes and manages preview URLs; only the worker
refreshes tokens. A create with ``previewAuth`` answers its token once, as
``previewAuthToken`` (always present in a create's answer, "" without preview auth). ``timeout`` is
served on both although the spec calls it worker-only: the Python SDK posts it through
its control-plane client.

The control plane also serves corral's own audit trail (``routes_audit``), API key
(``routes_keys``), caller and node (``routes_node``: /me, /node), users (``routes_users``) and service binding (``routes_bindings``) routes, and spec 003's checkpoints, forks and patches
(``routes_checkpoints``), hibernate and wake (``routes_lifecycle``, which also has the
keepalive route of both mounts and the ``X-OSB-Async-Wake`` header every route reads)
and Dockerfile templates (``routes_templates``). Which role may call what is decided in the services
(``corral.auth.scopes``): 403 for a missing scope, 404 for another org's resource.

Handlers are thin: parse, call one service, map (see ``mapping``). Errors are raised as
``CorralError`` and rendered by ``errors``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi import status as http

from corral.api.opencomputer import (
    mapping,
    routes_agent,
    routes_audit,
    routes_bindings,
    routes_checkpoints,
    routes_exec,
    routes_files,
    routes_keys,
    routes_lifecycle,
    routes_network,
    routes_node,
    routes_preview,
    routes_pty,
    routes_templates,
    routes_users,
)
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import (
    CreatedSandboxOut,
    CreateSandboxBody,
    ErrorOut,
    SandboxOut,
    TimeoutBody,
    TokenOut,
)
from corral.auth.principal import Principal

MAX_PAGE = 1000  # sandboxes in one page of GET /api/sandboxes?limit=
ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in [
        (400, "Invalid request; the message names the field"),
        (401, "Missing or invalid credentials"),
        (403, "The credential's role lacks the scope this needs"),
        (404, "No such sandbox (or not visible to this credential)"),
        (409, "The sandbox is not running"),
        (429, "Rate limit exceeded; retry after Retry-After seconds"),
    ]
}


def router(surface: Surface) -> APIRouter:
    """Every route of this surface, as mounted for ``surface``."""
    top = APIRouter(
        tags=[f"OpenComputer {surface.name}"],
        responses=ERROR_RESPONSES,
        dependencies=[Depends(routes_lifecycle.wake_preference)],  # X-OSB-Async-Wake
    )
    top.include_router(routes_checkpoints.router(surface))  # before /sandboxes/{id}/...
    top.include_router(_lifecycle(surface))
    top.include_router(routes_lifecycle.router(surface))
    top.include_router(routes_exec.router(surface))
    top.include_router(routes_agent.router(surface))
    top.include_router(routes_files.router(surface))
    top.include_router(routes_pty.router(surface))
    top.include_router(routes_preview.router(surface))
    top.include_router(routes_network.router(surface))
    if surface.control:
        top.include_router(routes_audit.router(surface))
        top.include_router(routes_keys.router(surface))
        top.include_router(routes_node.router(surface))
        top.include_router(routes_users.router(surface))
        top.include_router(routes_bindings.router(surface))
        top.include_router(routes_templates.router(surface))
    return top


def _lifecycle(surface: Surface) -> APIRouter:
    r = APIRouter()
    caller = Depends(surface.principal)

    if surface.control:

        @r.post("/sandboxes", status_code=http.HTTP_201_CREATED, summary="Create a sandbox")
        async def create_sandbox(
            core: CoreDep, body: CreateSandboxBody | None = None, principal: Principal = caller
        ) -> CreatedSandboxOut:
            auth = body.previewAuth if body else None
            preview = core.previews.issue_token(auth.token, auth.scheme) if auth else None
            request = mapping.create_request(body, preview.hash if preview else None)
            sandbox = await core.sandboxes.create(principal, request)
            token = core.auth.issue_token(principal, sandbox.id)
            plaintext = preview.plaintext if preview else ""
            return mapping.created_sandbox_out(
                sandbox, core.settings.base_url, token, core.previews.sandbox_domain, plaintext
            )

        @r.get("/sandboxes", summary="List running sandboxes")
        async def list_sandboxes(
            core: CoreDep,
            response: Response,
            principal: Principal = caller,
            limit: Annotated[int | None, Query(ge=1, le=MAX_PAGE)] = None,
            cursor: Annotated[str | None, Query(max_length=64)] = None,
        ) -> list[SandboxOut]:
            # corral's paging (the spec lists all): ?limit=N answers one page in creation
            # order and, when more may follow, X-Next-Cursor for ?cursor= of the next one
            found = await core.sandboxes.list(principal, limit=limit, after=cursor)
            if limit is not None and len(found) == limit:
                response.headers["X-Next-Cursor"] = found[-1].id
            url = core.settings.base_url
            return [
                mapping.sandbox_out(
                    sb, url, core.auth.issue_token(principal, sb.id), core.previews.sandbox_domain
                )
                for sb in found
            ]

        @r.delete("/sandboxes/{sandbox_id}", status_code=204, summary="Kill a sandbox")
        async def kill_sandbox(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> Response:
            await core.sandboxes.kill(principal, sandbox_id)
            return Response(status_code=204)

    else:

        @r.post("/sandboxes/{sandbox_id}/token/refresh", summary="Refresh the worker token")
        async def refresh_token(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> TokenOut:
            sandbox = await core.sandboxes.get(principal, sandbox_id)
            return TokenOut(token=core.auth.issue_token(principal, sandbox.id))

    @r.get("/sandboxes/{sandbox_id}", summary="Get a sandbox")
    async def get_sandbox(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> SandboxOut:
        sandbox = await core.sandboxes.get(principal, sandbox_id)
        token = core.auth.issue_token(principal, sandbox.id)
        return mapping.sandbox_out(sandbox, core.settings.base_url, token, core.previews.sandbox_domain)

    @r.post("/sandboxes/{sandbox_id}/timeout", status_code=204, summary="Set the idle timeout")
    async def set_timeout(
        core: CoreDep, sandbox_id: str, body: TimeoutBody, principal: Principal = caller
    ) -> Response:
        await core.sandboxes.set_timeout(principal, sandbox_id, body.timeout)
        return Response(status_code=204)

    return r
