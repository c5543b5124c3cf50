"""Routes of the agent-runs surface (spec 004; see the package docstring), under
``/api/sessions`` and ``/api/sandbox``. Handlers are thin: parse, call one method of
``core.runs``, map the answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response

from corral.api.runs import mapping
from corral.api.runs.auth import CoreDep, PrincipalDep, ReaderDep
from corral.api.runs.errors import RunsRoute, unrouted
from corral.api.runs.schemas import (
    CreateSessionIn,
    CreateSessionOut,
    ErrorOut,
    ExtendIn,
    ExtendOut,
    RunOut,
    StartRunIn,
    StartRunOut,
    ThreadEnvelope,
)
from corral.domain.sessions import Frame

ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorOut, "description": "A bad field (named) or body"},
    401: {"model": ErrorOut, "description": "Missing or invalid credential"},
    404: {"model": ErrorOut, "description": "Unknown, or another workspace's"},
    429: {"model": ErrorOut, "description": "Rate limited (Retry-After)"},
    503: {"model": ErrorOut, "description": "No model key configured"},
}
sessions = APIRouter(prefix="/api/sessions", tags=["agent runs"], route_class=RunsRoute, responses=ERRORS)
sandbox = APIRouter(prefix="/api/sandbox", tags=["agent runs"], route_class=RunsRoute, responses=ERRORS)
PING_S = 15


@sessions.post("", status_code=201, summary="Create a session (a thread) with its first prompt")
async def create_session(body: CreateSessionIn, principal: PrincipalDep, core: CoreDep) -> CreateSessionOut:
    thread, message = await core.runs.create_thread(principal, mapping.new_thread(body))
    return CreateSessionOut(threadId=thread.id, messageId=message.id)


@sessions.get("/{thread_id}", summary="A session: prompts, desktop metadata, messages")
async def get_session(thread_id: str, principal: PrincipalDep, core: CoreDep) -> ThreadEnvelope:
    thread, messages = await core.runs.thread(principal, thread_id)
    return ThreadEnvelope(thread=mapping.thread_out(thread, messages))


@sessions.post("/{thread_id}/runs", status_code=201, summary="Start a run of the agent on the session")
async def start_run(thread_id: str, body: StartRunIn, principal: PrincipalDep, core: CoreDep) -> StartRunOut:
    started = await core.runs.start_run(principal, thread_id, body.message)
    return StartRunOut(
        threadId=started.run.thread_id,
        runId=started.run.id,
        publicAccessToken=started.token,
        messageId=started.message.id,
    )


@sessions.get("/{thread_id}/runs/{run_id}", summary="A run: status and desktop metadata")
async def get_run(thread_id: str, run_id: str, reader: ReaderDep, core: CoreDep) -> RunOut:
    return mapping.run_out(await core.runs.run(reader, thread_id, run_id))


@sessions.post("/{thread_id}/runs/{run_id}/cancel", summary="Cancel a run (corral's); the run once stopped")
async def cancel_run(thread_id: str, run_id: str, principal: PrincipalDep, core: CoreDep) -> RunOut:
    return mapping.run_out(await core.runs.cancel(principal, thread_id, run_id))


@sessions.get(
    "/{thread_id}/runs/{run_id}/stream",
    summary="A run's progress (corral's SSE): status, desktop, assistant, action, done",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_run(thread_id: str, run_id: str, reader: ReaderDep, core: CoreDep) -> EventSourceResponse:
    frames = await core.runs.events(reader, thread_id, run_id)
    return EventSourceResponse(_events(frames), ping=PING_S, headers={"Cache-Control": "no-cache"})


async def _events(frames: AsyncIterator[Frame]) -> AsyncIterator[dict[str, str]]:
    async for frame in frames:
        yield mapping.event(frame)


@sandbox.post("/extend", summary="Extend a session's desktop by 15 minutes (calls stack)")
async def extend(body: ExtendIn, principal: PrincipalDep, core: CoreDep) -> ExtendOut:
    extended = await core.runs.extend(principal, body.sandboxId)
    assert extended.deadline_at is not None
    return ExtendOut(sandboxId=extended.id, expiresAt=mapping.time_of(extended.deadline_at))


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _last(router: APIRouter) -> None:
    """What no route of ``router`` takes, in this surface's envelope (405 or 404)."""
    own = list(router.routes)

    async def elsewhere(request: Request) -> Response:
        return unrouted(request, own)

    router.add_api_route("", elsewhere, methods=METHODS, include_in_schema=False)
    router.add_api_route("/{path:path}", elsewhere, methods=METHODS, include_in_schema=False)


_last(sessions)
_last(sandbox)
