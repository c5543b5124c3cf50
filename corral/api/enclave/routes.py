"""Routes of the Enclave surface (spec 001; see the package docstring). Handlers are
thin: parse, call one method of ``core.sessions``, map the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from corral.api.enclave.auth import CoreDep, PrincipalDep
from corral.api.enclave.errors import EnclaveRoute, unrouted
from corral.api.enclave.mapping import event_out, request_of, result_out, session_out, sse
from corral.api.enclave.schemas import (
    AuditOut,
    CreateSessionRequest,
    ErrorOut,
    SessionOut,
    SessionPage,
    SessionResultOut,
)
from corral.domain.sessions import Frame

router = APIRouter(
    prefix="/sessions",
    tags=["enclave"],
    route_class=EnclaveRoute,
    responses={
        401: {"model": ErrorOut, "description": "Missing or invalid credential"},
        403: {"model": ErrorOut, "description": "The role lacks the scope"},
        404: {"model": ErrorOut, "description": "Unknown session, or another org's"},
        429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)"},
    },
)


@router.post("", status_code=201, summary="Create and run a session", responses={400: {"model": ErrorOut}})
async def create(body: CreateSessionRequest, principal: PrincipalDep, core: CoreDep) -> SessionOut:
    request = request_of(body, core.sessions.bounds)
    session = await core.sessions.create(principal, request)
    return session_out(session, core.runtime.name)


@router.get("", summary="Sessions of the caller's org, newest first")
async def list_sessions(
    principal: PrincipalDep,
    core: CoreDep,
    limit: int = Query(20),
    cursor: str | None = Query(None),
) -> SessionPage:
    found, after = await core.sessions.list(principal, limit, cursor)
    return SessionPage(sessions=[session_out(s, core.runtime.name) for s in found], nextCursor=after)


@router.get("/{session_id}", summary="A session's status (no token, no secret)")
async def get(session_id: str, principal: PrincipalDep, core: CoreDep) -> SessionOut:
    return session_out(await core.sessions.get(principal, session_id), core.runtime.name)


@router.get("/{session_id}/result", summary="The result, once terminal", responses={409: {"model": ErrorOut}})
async def result(session_id: str, principal: PrincipalDep, core: CoreDep) -> SessionResultOut:
    return result_out(await core.sessions.result(principal, session_id))


@router.get("/{session_id}/audit", summary="The session's audit trail, oldest first")
async def audit(session_id: str, principal: PrincipalDep, core: CoreDep) -> AuditOut:
    return AuditOut(events=[event_out(e) for e in await core.sessions.trail(principal, session_id)])


@router.get(
    "/{session_id}/stream",
    summary="Live SSE stream: phase, stdout, stderr, audit, result, end",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream(session_id: str, principal: PrincipalDep, core: CoreDep) -> StreamingResponse:
    frames = await core.sessions.frames(principal, session_id)
    return StreamingResponse(
        _events(frames),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
    async for frame in frames:
        yield sse(frame)


@router.delete("/{session_id}", summary="Tear the session down, at any phase")
async def delete(session_id: str, principal: PrincipalDep, core: CoreDep) -> SessionOut:
    return session_out(await core.sessions.delete(principal, session_id), core.runtime.name)


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@router.api_route("", methods=METHODS, include_in_schema=False)
@router.api_route("/{path:path}", methods=METHODS, include_in_schema=False)
async def elsewhere(request: Request) -> Response:
    """Last: what no route above takes, in this surface's envelope (405 or 404)."""
    return unrouted(request, [r for r in router.routes if getattr(r, "endpoint", None) is not elsewhere])
