"""The MCP server's tools and resources, over ``Api`` (corral's own HTTP API).

``build(connect)`` makes the server; ``connect(ctx)`` opens the ``Api`` of the caller
of one request (the stdio server: the one configured; ``/mcp``: the app itself, with
the request's credential). So each tool is only a call of a route: who may do what,
and what a refusal says, is the API's.

Tools: the Enclave five over ``/sessions`` (``run_code`` runs to the end, reporting
each frame of the session's stream as progress, and returns the result) and the
sandbox tools over the OpenComputer routes under ``/api/sandboxes``. Resources: a
sandbox's files (``sandbox://{sandbox_id}/{+path}``) and a template
(``corral://templates/{name}``; the SDK gives a static resource no caller, so the list
is the ``list_templates`` tool). Long text (output, files) is cut at ``MAX_TEXT`` characters
and says so. A bad argument is refused by the SDK's validation, naming it; a refusal of
corral's is a tool error with corral's message (``api.Api.call``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from corral.api.mcp.api import Api, segment

MAX_TEXT = 20_000
"""The most characters of one output, file or stream a tool returns."""
EXEC_TIMEOUT_S = 60  # exec/run's default timeout
TIMED_OUT = 124  # the exit code of a command killed at its timeout (as coreutils' timeout)

Connect = Callable[[Context], AbstractAsyncContextManager[Api]]

INSTRUCTIONS = """corral runs code in isolated Linux sandboxes (runc containers).
For a one-off program use run_code (python or node; it returns stdout, stderr, the exit
code and the value passed to enclave.result(...)). To work in a machine that persists,
create_sandbox, then exec / write_file / read_file / list_files in it, preview_url to
reach a server it listens on, checkpoint and fork to branch it, kill_sandbox when done."""

SandboxId = Annotated[str, Field(description="The sandbox's id (sandboxID of create_sandbox).")]
SessionId = Annotated[str, Field(description="The session's id (sessionId of run_code).")]
Path = Annotated[str, Field(description="An absolute path inside the sandbox, e.g. /home/user/app.py.")]

READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DESTROY = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)


def bounded(text: str, limit: int = MAX_TEXT) -> str:
    """``text``, cut at ``limit`` characters with a line saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[... {len(text) - limit} more characters not shown]"


def bounded_output(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` with its ``stdout`` and ``stderr`` bounded."""
    return {
        k: bounded(v) if k in ("stdout", "stderr") and isinstance(v, str) else v for k, v in answer.items()
    }


def _sandbox(answer: dict[str, Any]) -> dict[str, Any]:
    """A sandbox as a model sees it: no token (the caller's credential does it all)."""
    return {k: v for k, v in answer.items() if "token" not in k.lower()}


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _quietly_built(version: str) -> MCPServer:
    """A bare ``MCPServer``, leaving the process's logging as it was: building one
    configures the root logger (``logging.basicConfig`` at INFO with a Rich handler)
    when nothing has yet, and logging is the embedding program's to set (``corral serve``
    sets its own; a test or a bench creating the app keeps Python's default)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer("corral", version=version, instructions=INSTRUCTIONS)
    root.handlers[:] = handlers
    root.setLevel(level)
    return server


def build(connect: Connect, *, version: str = "") -> MCPServer:
    """The MCP server with every tool and resource, each calling the API through ``connect``."""
    server = _quietly_built(version)

    # ---- Enclave: code sessions (/sessions) -----------------------------------------

    @server.tool(annotations=WRITE)
    async def run_code(
        ctx: Context,
        code: Annotated[str, Field(description="The program to run.")],
        language: Annotated[
            Literal["python", "node"], Field(description="The language of `code`.")
        ] = "python",
        egress: Annotated[
            dict[str, Any] | None,
            Field(
                description='Network policy: {"mode": "deny_all"} (the default) or '
                '{"mode": "allowlist", "allow": ["<CIDR>", ...]}.'
            ),
        ] = None,
        limits: Annotated[
            dict[str, Any] | None,
            Field(
                description="Quotas, defaults filled by the server: memoryMiB, wallClockSeconds, "
                "cpuMillicores, pids."
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Run a program in a fresh, throwaway sandbox and wait for it to end.

        Returns the session's id and final phase (succeeded, failed or killed) with its
        result: exitCode, stdout, stderr, result (the value the program passed to the
        global `enclave.result(...)`, no import needed), killReason and durationMs.
        Network access is denied unless `egress` allows it."""
        body = _given(code=code, language=language, egress=egress, limits=limits)
        async with connect(ctx) as api:
            session = await api.call("POST", "/sessions", json=body)
            session_id = segment(str(session["id"]))
            step, phase = 0, None
            async with api.lines(f"/sessions/{session_id}/stream") as lines:
                async for line in lines:
                    if not line.startswith("data: "):
                        continue
                    frame = json.loads(line.removeprefix("data: "))
                    step += 1
                    if frame.get("kind") == "end":
                        phase = frame.get("phase")  # the outcome, before the teardown
                    note = frame.get("phase") or frame.get("kind")
                    await ctx.report_progress(step, message=f"{frame.get('kind')}: {note}")
            result = await api.call("GET", f"/sessions/{session_id}/result")
        return {"sessionId": session["id"], "phase": phase, **bounded_output(result)}

    @server.tool(annotations=READ)
    async def get_result(ctx: Context, sessionId: SessionId) -> dict[str, Any]:
        """A session's result once it has ended: exitCode, stdout, stderr, result,
        killReason, durationMs (an error while it still runs)."""
        async with connect(ctx) as api:
            return bounded_output(await api.call("GET", f"/sessions/{segment(sessionId)}/result"))

    @server.tool(annotations=READ)
    async def get_audit(ctx: Context, sessionId: SessionId) -> dict[str, Any]:
        """A session's audit trail, oldest first: sandbox started, every egress allowed or
        denied (with its destination), quota kills, exit, teardown."""
        async with connect(ctx) as api:
            answer: dict[str, Any] = await api.call("GET", f"/sessions/{segment(sessionId)}/audit")
        return answer

    @server.tool(annotations=READ)
    async def list_sessions(ctx: Context) -> dict[str, Any]:
        """The code sessions of the caller's organisation, newest first, with their phases."""
        async with connect(ctx) as api:
            answer = await api.call("GET", "/sessions")
        return answer if isinstance(answer, dict) else {"sessions": answer}

    @server.tool(annotations=DESTROY)
    async def teardown_session(ctx: Context, sessionId: SessionId) -> dict[str, Any]:
        """End a session at any phase (killing its program if it runs) and reclaim its sandbox."""
        async with connect(ctx) as api:
            answer: dict[str, Any] = await api.call("DELETE", f"/sessions/{segment(sessionId)}")
        return answer

    # ---- sandboxes (/api/sandboxes) -------------------------------------------------

    @server.tool(annotations=WRITE)
    async def create_sandbox(
        ctx: Context,
        template: Annotated[
            str | None, Field(description="Template name, e.g. base (the default) or nodejs.")
        ] = None,
        envs: Annotated[dict[str, str] | None, Field(description="Environment variables.")] = None,
        cpu: Annotated[int | None, Field(description="CPU count.", ge=1)] = None,
        memory: Annotated[int | None, Field(description="Memory in MB.", ge=1)] = None,
        timeout: Annotated[
            int | None, Field(description="Seconds of idleness before it is stopped.", ge=1)
        ] = None,
    ) -> dict[str, Any]:
        """Create a sandbox (a Linux machine that persists until killed or idle) and return it;
        its sandboxID is what the other sandbox tools take."""
        body = _given(templateID=template, envs=envs, cpuCount=cpu, memoryMB=memory, timeout=timeout)
        async with connect(ctx) as api:
            return _sandbox(await api.call("POST", "/api/sandboxes", json=body))

    @server.tool(annotations=READ)
    async def list_sandboxes(ctx: Context) -> dict[str, Any]:
        """The running sandboxes of the caller's organisation."""
        async with connect(ctx) as api:
            answer = await api.call("GET", "/api/sandboxes")
        return {"sandboxes": [_sandbox(s) for s in answer]}

    @server.tool(annotations=WRITE)
    async def exec(
        ctx: Context,
        sandbox_id: SandboxId,
        command: Annotated[str, Field(description="A shell command line (run by /bin/sh -c).")],
        cwd: Annotated[str | None, Field(description="Working directory.")] = None,
        timeout: Annotated[
            int | None, Field(description="Seconds before the command is killed (default 60).", ge=1)
        ] = None,
    ) -> dict[str, Any]:
        """Run a shell command in a sandbox and wait for it: exitCode, stdout, stderr.
        A command still running at its timeout is killed: an error saying so."""
        body = _given(cmd="/bin/sh", args=["-c", command], cwd=cwd, timeout=timeout)
        async with connect(ctx) as api:
            answer = await api.call("POST", f"/api/sandboxes/{segment(sandbox_id)}/exec/run", json=body)
        answer = bounded_output(answer)
        if answer.get("exitCode") == TIMED_OUT:
            raise ToolError(
                f"exit code {TIMED_OUT}: the command ran past its timeout "
                f"({timeout or EXEC_TIMEOUT_S} s) and was killed (or exited {TIMED_OUT} itself); "
                f"stdout: {answer.get('stdout')!r}, stderr: {answer.get('stderr')!r}"
            )
        return answer

    @server.tool(annotations=READ)
    async def read_file(ctx: Context, sandbox_id: SandboxId, path: Path) -> str:
        """A text file of a sandbox (long files are cut, and say so)."""
        async with connect(ctx) as api:
            return bounded(await _read(api, sandbox_id, path))

    @server.tool(annotations=WRITE)
    async def write_file(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Path,
        content: Annotated[str, Field(description="The file's whole new content (UTF-8 text).")],
    ) -> str:
        """Write a text file in a sandbox (created with its directories, or replaced)."""
        async with connect(ctx) as api:
            url = f"/api/sandboxes/{segment(sandbox_id)}/files"
            await api.call("PUT", url, params={"path": path}, content=content.encode())
        return f"wrote {len(content.encode())} bytes to {path}"

    @server.tool(annotations=READ)
    async def list_files(
        ctx: Context,
        sandbox_id: SandboxId,
        path: Annotated[str, Field(description="A directory inside the sandbox.")] = "/",
    ) -> dict[str, Any]:
        """The entries of a directory of a sandbox: name, path, isDir, size."""
        async with connect(ctx) as api:
            url = f"/api/sandboxes/{segment(sandbox_id)}/files/list"
            entries = await api.call("GET", url, params={"path": path})
        return {"path": path, "entries": entries}

    @server.tool(annotations=WRITE)
    async def preview_url(
        ctx: Context,
        sandbox_id: SandboxId,
        port: Annotated[
            int, Field(description="The port a server listens on in the sandbox.", ge=1, le=65535)
        ],
    ) -> dict[str, Any]:
        """A URL that reaches a port of a sandbox from outside (through corral's gateway)."""
        async with connect(ctx) as api:
            url = f"/api/sandboxes/{segment(sandbox_id)}/preview"
            answer: dict[str, Any] = await api.call("POST", url, json={"port": port})
        return answer

    @server.tool(annotations=WRITE)
    async def checkpoint(
        ctx: Context,
        sandbox_id: SandboxId,
        name: Annotated[str, Field(description="A name, unique for this sandbox.")],
    ) -> dict[str, Any]:
        """Save a copy of a sandbox's files as they are now; fork makes new sandboxes of it
        once its status is ready."""
        async with connect(ctx) as api:
            url = f"/api/sandboxes/{segment(sandbox_id)}/checkpoints"
            answer: dict[str, Any] = await api.call("POST", url, json={"name": name})
        return answer

    @server.tool(annotations=WRITE)
    async def fork(
        ctx: Context,
        checkpoint_id: Annotated[str, Field(description="The checkpoint's id (id of checkpoint).")],
        envs: Annotated[dict[str, str] | None, Field(description="Environment variables to add.")] = None,
    ) -> dict[str, Any]:
        """A new sandbox with exactly a checkpoint's files and configuration."""
        async with connect(ctx) as api:
            url = f"/api/sandboxes/from-checkpoint/{segment(checkpoint_id)}"
            return _sandbox(await api.call("POST", url, json=_given(envs=envs)))

    @server.tool(annotations=DESTROY)
    async def kill_sandbox(ctx: Context, sandbox_id: SandboxId) -> str:
        """Kill a sandbox and delete its files (its checkpoints stay)."""
        async with connect(ctx) as api:
            await api.call("DELETE", f"/api/sandboxes/{segment(sandbox_id)}")
        return f"killed {sandbox_id}"

    @server.tool(annotations=READ)
    async def list_templates(ctx: Context) -> dict[str, Any]:
        """The templates sandboxes can be created from (create_sandbox's template)."""
        async with connect(ctx) as api:
            return {"templates": await api.call("GET", "/api/templates")}

    # ---- resources ------------------------------------------------------------------

    @server.resource("sandbox://{sandbox_id}/{+path}", mime_type="text/plain")
    async def sandbox_file(ctx: Context, sandbox_id: str, path: str) -> str:
        """A text file of a sandbox, by its path from the root."""
        async with connect(ctx) as api:
            return bounded(await _read(api, sandbox_id, "/" + path.lstrip("/")))

    @server.resource("corral://templates/{name}", mime_type="application/json")
    async def template(ctx: Context, name: str) -> str:
        """A template sandboxes can be created from (list_templates names them)."""
        async with connect(ctx) as api:
            return json.dumps(await api.call("GET", f"/api/templates/{segment(name)}"))

    return server


async def _read(api: Api, sandbox_id: str, path: str) -> str:
    answer = await api.call("GET", f"/api/sandboxes/{segment(sandbox_id)}/files", params={"path": path})
    return "" if answer is None else str(answer)
