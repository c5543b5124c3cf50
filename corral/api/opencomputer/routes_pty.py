"""PTY routes: create, WebSocket (raw bytes both ways), resize, kill.

The shell defaults to ``/bin/bash`` (run as a login shell), 80x24. On connect the
WebSocket replays the PTY's scrollback, then streams live; it closes with 1000 when
the shell exits. Disconnecting does not end the shell: DELETE does.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response, WebSocket

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import EmptyOut, PtyBody, PtyOut, ResizeBody
from corral.api.opencomputer.session_socket import attach
from corral.auth.principal import Principal

PTY_IDS = ("ps",)


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}/pty")
    caller = Depends(surface.principal)

    @r.post("", status_code=201, summary="Start a PTY")
    async def create_pty(
        core: CoreDep, sandbox_id: str, body: PtyBody | None = None, principal: Principal = caller
    ) -> PtyOut:
        body = body or PtyBody()
        cols = 80 if body.cols is None else body.cols
        rows = 24 if body.rows is None else body.rows
        info = await core.commands.create_pty(principal, sandbox_id, cols, rows, body.shell or None)
        return mapping.pty_out(info, sandbox_id)

    @r.post("/{session_id}/resize", summary="Resize a PTY")
    async def resize_pty(
        core: CoreDep, sandbox_id: str, session_id: str, body: ResizeBody, principal: Principal = caller
    ) -> EmptyOut:
        session_id = mapping.path_id(session_id, PTY_IDS, "PTY session")
        await core.commands.resize_pty(principal, sandbox_id, session_id, body.cols, body.rows)
        return EmptyOut()

    @r.delete("/{session_id}", status_code=204, summary="Kill a PTY")
    async def kill_pty(
        core: CoreDep, sandbox_id: str, session_id: str, principal: Principal = caller
    ) -> Response:
        session_id = mapping.path_id(session_id, PTY_IDS, "PTY session")
        await core.commands.kill_pty(principal, sandbox_id, session_id)
        return Response(status_code=204)

    @r.websocket("/{session_id}")
    async def attach_pty(
        ws: WebSocket, core: CoreDep, sandbox_id: str, session_id: str, principal: Principal = caller
    ) -> None:
        """Raw terminal bytes both ways (see ``bridge``)."""
        await attach(ws, core, principal, sandbox_id, session_id, PTY_IDS, "PTY session", framed=False)

    return r
