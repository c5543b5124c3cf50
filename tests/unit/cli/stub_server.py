"""A stub of the OpenComputer control-plane routes the CLI uses, served for real.

It keeps sandboxes in memory, records every request in ``calls``, runs exec sessions
as local ``subprocess`` commands (so output, stderr and exit codes are real), and
fakes a line-oriented shell on the PTY WebSocket: it echoes input, answers
``echo WORDS`` with WORDS and closes on ``exit``.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response

KEY = "ek_stubkey0001_0123456789abcdef0123"
STARTED = "2025-01-15T10:30:00Z"


@dataclass
class StubState:
    sandboxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    counter: int = 0
    drop_exec_socket: bool = False  # close exec WebSockets without an exit frame

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-stub{self.counter:012d}"

    def called(self, method: str, path_suffix: str) -> list[Any]:
        return [body for m, p, body in self.calls if m == method and p.endswith(path_suffix)]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(state: StubState) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def auth_and_record(request: Request, call_next: Any) -> Response:
        body = await request.body()
        state.calls.append((request.method, request.url.path, body.decode() if body else None))
        if request.headers.get("x-api-key") != KEY:
            return _error(401, "invalid API key")
        response: Response = await call_next(request)
        return response

    def sandbox_or_404(sandbox_id: str) -> dict[str, Any] | None:
        return state.sandboxes.get(sandbox_id)

    @app.post("/api/sandboxes", status_code=201)
    async def create(request: Request) -> Any:
        body = await request.json()
        sandbox_id = state.next_id("sb")
        sandbox = {
            "sandboxID": sandbox_id,
            "templateID": body.get("templateID", "base"),
            "status": "running",
            "startedAt": STARTED,
            "endAt": None,
            "cpuCount": body.get("cpuCount", 1),
            "memoryMB": body.get("memoryMB", 512),
            "metadata": body.get("metadata", {}),
        }
        state.sandboxes[sandbox_id] = sandbox
        return JSONResponse(sandbox, status_code=201)

    @app.get("/api/sandboxes")
    async def list_() -> Any:
        return list(state.sandboxes.values())

    @app.delete("/api/sandboxes/{sandbox_id}")
    async def kill(sandbox_id: str) -> Response:
        if state.sandboxes.pop(sandbox_id, None) is None:
            return _error(404, f"sandbox {sandbox_id} not found")
        return Response(status_code=204)

    @app.post("/api/sandboxes/{sandbox_id}/exec")
    async def start_session(sandbox_id: str, request: Request) -> Any:
        if sandbox_or_404(sandbox_id) is None:
            return _error(404, f"sandbox {sandbox_id} not found")
        body = await request.json()
        session_id = state.next_id("es")
        state.sessions[session_id] = body
        return JSONResponse(
            {"sessionID": session_id, "sandboxID": sandbox_id, "running": True}, status_code=201
        )

    @app.post("/api/sandboxes/{sandbox_id}/exec/{session_id}/kill")
    async def kill_session(sandbox_id: str, session_id: str) -> Response:
        return Response(status_code=204)

    @app.websocket("/api/sandboxes/{sandbox_id}/exec/{session_id}")
    async def attach(ws: WebSocket, sandbox_id: str, session_id: str) -> None:
        if ws.query_params.get("api_key") != KEY:
            await ws.close(code=4401)
            return
        spec = state.sessions.get(session_id)
        await ws.accept()
        await ws.send_bytes(b"\x04")
        if spec is None or state.drop_exec_socket:
            await ws.close()
            return
        proc = await asyncio.create_subprocess_exec(
            shutil.which(spec["cmd"]) or spec["cmd"],
            *spec.get("args", []),
            env={"PATH": "/usr/bin:/bin", **spec.get("envs", {})},
            cwd=spec.get("cwd"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

        async def pump(stream: asyncio.StreamReader, prefix: bytes) -> None:
            while chunk := await stream.read(4096):
                await ws.send_bytes(prefix + chunk)

        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.gather(pump(proc.stdout, b"\x01"), pump(proc.stderr, b"\x02"))
        code = await proc.wait()
        await ws.send_bytes(b"\x03" + code.to_bytes(4, "big", signed=True))
        await ws.close()

    @app.post("/api/sandboxes/{sandbox_id}/pty", status_code=201)
    async def create_pty(sandbox_id: str) -> Any:
        if sandbox_or_404(sandbox_id) is None:
            return _error(404, f"sandbox {sandbox_id} not found")
        return JSONResponse({"sessionID": state.next_id("ps"), "sandboxID": sandbox_id}, status_code=201)

    @app.post("/api/sandboxes/{sandbox_id}/pty/{session_id}/resize")
    async def resize(sandbox_id: str, session_id: str) -> Any:
        return {}

    @app.delete("/api/sandboxes/{sandbox_id}/pty/{session_id}")
    async def kill_pty(sandbox_id: str, session_id: str) -> Response:
        return Response(status_code=204)

    @app.websocket("/api/sandboxes/{sandbox_id}/pty/{session_id}")
    async def pty(ws: WebSocket, sandbox_id: str, session_id: str) -> None:
        if ws.query_params.get("api_key") != KEY:
            await ws.close(code=4401)
            return
        await ws.accept()
        await ws.send_bytes(b"$ ")
        line = b""
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            for byte in data:
                char = bytes([byte])
                if char in (b"\r", b"\n"):
                    await ws.send_bytes(b"\r\n")
                    command = line.decode().strip()
                    line = b""
                    if command == "exit":
                        await ws.close()
                        return
                    if command.startswith("echo "):
                        await ws.send_bytes(command[5:].encode() + b"\r\n")
                    await ws.send_bytes(b"$ ")
                else:
                    line += char
                    await ws.send_bytes(char)

    return app
