"""Exec routes: run (sync and async), sessions, and the session WebSocket.

``exec/run`` waits for the command (default timeout 60 s, as the spec says); a timeout
is a result with exit code 124, not an error. ``exec/run-async`` answers 201 with an
``execId`` at once; ``exec/{execId}/result`` reports ``running`` until the command
ends (results are kept for 10 minutes, their output while the server's output budget
allows). Both answers are streamed from the output held (``answer``) and say
``"truncated": true`` when output was dropped. ``X-OSB-Async-Wake`` is accepted and ignored:
corral does not hibernate sandboxes yet.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, WebSocket

from corral.api.opencomputer import answer, mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import (
    ExecBody,
    ExecHandleOut,
    ExecResultOut,
    ExecStatusOut,
    KillBody,
    SessionBody,
    SessionOut,
)
from corral.api.opencomputer.session_socket import attach
from corral.auth.principal import Principal

SESSION_IDS = ("es", "ps", "as")  # as-: agent sessions (routes_agent) stream here too


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}/exec")
    caller = Depends(surface.principal)

    @r.post("/run", summary="Run a command and wait for it", response_model=ExecResultOut)
    async def exec_run(
        core: CoreDep, sandbox_id: str, body: ExecBody, principal: Principal = caller
    ) -> Response:
        held = await core.commands.run_held(principal, sandbox_id, mapping.exec_request(body))
        return answer.run_answer(held)

    @r.post("/run-async", status_code=201, summary="Start a command; poll its result")
    async def exec_run_async(
        core: CoreDep, sandbox_id: str, body: ExecBody, principal: Principal = caller
    ) -> ExecHandleOut:
        exec_id = await core.commands.run_async(principal, sandbox_id, mapping.exec_request(body))
        return mapping.exec_handle_out(exec_id)

    @r.get(
        "/{exec_id}/result",
        summary="Result of a command started with run-async",
        response_model=ExecStatusOut,
    )
    async def exec_result(
        core: CoreDep, sandbox_id: str, exec_id: str, principal: Principal = caller
    ) -> Response:
        state = await core.commands.result(principal, sandbox_id, exec_id)
        return answer.status_answer(state)

    @r.post("", status_code=201, summary="Start an exec session")
    async def create_session(
        core: CoreDep, sandbox_id: str, body: SessionBody, principal: Principal = caller
    ) -> SessionOut:
        info = await core.commands.start_session(principal, sandbox_id, mapping.session_spec(body))
        return mapping.session_out(info, sandbox_id)

    @r.get("", summary="List exec sessions")
    async def list_sessions(
        core: CoreDep, sandbox_id: str, principal: Principal = caller
    ) -> list[SessionOut]:
        found = await core.commands.list_sessions(principal, sandbox_id)
        return [mapping.session_out(info, sandbox_id) for info in found]

    @r.post("/{session_id}/kill", status_code=204, summary="Signal an exec session")
    async def kill_session(
        core: CoreDep,
        sandbox_id: str,
        session_id: str,
        body: KillBody | None = None,
        principal: Principal = caller,
    ) -> Response:
        session_id = mapping.path_id(session_id, SESSION_IDS, "session")
        signal = 9 if body is None or body.signal is None else body.signal
        await core.commands.kill_session(principal, sandbox_id, session_id, signal)
        return Response(status_code=204)

    @r.websocket("/{session_id}")
    async def attach_session(
        ws: WebSocket, core: CoreDep, sandbox_id: str, session_id: str, principal: Principal = caller
    ) -> None:
        """Scrollback, 0x04, live output, 0x03 exit, close (see ``bridge``)."""
        await attach(ws, core, principal, sandbox_id, session_id, SESSION_IDS, "session", framed=True)

    return r
