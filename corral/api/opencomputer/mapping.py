"""Between this surface's schemas and the domain: requests in, results out.

Output bytes are decoded as UTF-8 with replacement characters (the spec's bodies are
JSON strings). Times are RFC 3339 in UTC with a ``Z``, to the second, as in the spec.
Path ids that do not have the right form are NotFound, like ids nobody knows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from corral.api.opencomputer.schemas import (
    CreateSandboxBody,
    ExecBody,
    ExecHandleOut,
    ExecResultOut,
    ExecStatusOut,
    FileEntryOut,
    PtyOut,
    SandboxOut,
    SessionBody,
    SessionOut,
)
from corral.domain import ExecRequest, ExecResult, FileEntry, Sandbox, SessionInfo, SessionSpec
from corral.errors import NotFound
from corral.ids import is_valid
from corral.services.commands import AsyncExec
from corral.services.sandboxes import CreateSandbox, end_at

EXEC_RUN_DEFAULT_TIMEOUT_S = 60  # the spec's default for exec/run


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def path_id(value: str, prefixes: tuple[str, ...], what: str) -> str:
    """A session or exec id from a URL path; NotFound unless it has one of the forms."""
    if not any(is_valid(value, p) for p in prefixes):
        raise NotFound(f"{what} {value} not found")
    return value


# ---- requests -----------------------------------------------------------------------


def create_request(body: CreateSandboxBody | None) -> CreateSandbox:
    body = body or CreateSandboxBody()
    return CreateSandbox(
        template=body.templateID or None,
        cpu_count=body.cpuCount,
        memory_mb=body.memoryMB,
        disk_mb=body.diskMB,
        timeout_s=body.timeout,
        envs=dict(body.envs or {}),
        metadata=dict(body.metadata or {}),
    )


def exec_request(body: ExecBody) -> ExecRequest:
    timeout = EXEC_RUN_DEFAULT_TIMEOUT_S if body.timeout is None else body.timeout
    return ExecRequest(
        cmd=body.cmd,
        args=tuple(body.args or ()),
        envs=dict(body.envs or {}),
        cwd=body.cwd or None,
        timeout_s=timeout,
    )


def session_spec(body: SessionBody) -> SessionSpec:
    return SessionSpec(
        cmd=body.cmd,
        args=tuple(body.args or ()),
        envs=dict(body.envs or {}),
        cwd=body.cwd or None,
        timeout_s=body.timeout or None,  # absent or 0: no limit
        max_run_after_disconnect_s=body.maxRunAfterDisconnect,
    )


# ---- responses ----------------------------------------------------------------------


def sandbox_out(sandbox: Sandbox, connect_url: str, token: str) -> SandboxOut:
    ends = end_at(sandbox)
    return SandboxOut(
        sandboxID=sandbox.id,
        templateID=sandbox.template,
        status=sandbox.status.value,
        startedAt=rfc3339(sandbox.created_at),
        endAt=rfc3339(ends) if ends else None,
        cpuCount=sandbox.limits.cpu_count,
        memoryMB=sandbox.limits.memory_mb,
        diskMB=sandbox.limits.disk_mb,
        metadata=dict(sandbox.metadata),
        connectURL=connect_url,
        token=token,
    )


def exec_result_out(result: ExecResult) -> ExecResultOut:
    return ExecResultOut(exitCode=result.exit_code, stdout=text(result.stdout), stderr=text(result.stderr))


def exec_handle_out(exec_id: str) -> ExecHandleOut:
    return ExecHandleOut(execId=exec_id)


def exec_status_out(state: AsyncExec) -> ExecStatusOut:
    result = state.result
    return ExecStatusOut(
        execId=state.id,
        running=state.running,
        exitCode=result.exit_code if result else None,
        stdout=text(result.stdout) if result else "",
        stderr=text(result.stderr) if result else "",
        error=state.error,
    )


def session_out(info: SessionInfo, sandbox_id: str) -> SessionOut:
    return SessionOut(
        sessionID=info.id,
        sandboxID=sandbox_id,
        command=info.cmd,
        args=list(info.args),
        running=info.running,
        exitCode=info.exit_code,
        startedAt=rfc3339(info.started_at),
        attachedClients=info.attached_clients,
    )


def pty_out(info: SessionInfo, sandbox_id: str) -> PtyOut:
    return PtyOut(sessionID=info.id, sandboxID=sandbox_id)


def entry_out(entry: FileEntry) -> FileEntryOut:
    return FileEntryOut(name=entry.name, isDir=entry.is_dir, size=entry.size, path=entry.path)
