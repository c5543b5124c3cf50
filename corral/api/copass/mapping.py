"""Copass bodies to the compute service's requests, sandboxes to session records: the
only place that knows both."""

from __future__ import annotations

from datetime import UTC, datetime

from corral.api.copass.schemas import (
    CreateSessionIn,
    ExecIn,
    ExecOut,
    GatewayOut,
    HealthOut,
    SessionOut,
    TemplateOut,
)
from corral.domain import Sandbox, SandboxStatus
from corral.services.compute import CREATOR, NAMESPACE, Command, Executed, NewSession, TemplateInfo

PROVIDER = "corral"
URL_TEMPLATE = "{base_url}/compute/{session_id}/p/{port}{path}"  # corral/gateway/routing.py serves it
_STATUS = {
    SandboxStatus.STARTING: "provisioning",
    SandboxStatus.RUNNING: "running",
    SandboxStatus.HIBERNATED: "idle",
    SandboxStatus.PAUSED: "idle",  # frozen, memory kept; resumed on use
    SandboxStatus.STOPPED: "stopped",
    SandboxStatus.ERROR: "failed",
}
_HEALTH = {
    SandboxStatus.STARTING: "starting",
    SandboxStatus.RUNNING: "ready",
    SandboxStatus.HIBERNATED: "starting",
    SandboxStatus.PAUSED: "ready",  # resumed in a millisecond by the next use
    SandboxStatus.STOPPED: "stopped",
    SandboxStatus.ERROR: "errored",
}


def new_session(body: CreateSessionIn) -> NewSession:
    return NewSession(body.template, body.env_vars or {}, body.metadata or {}, body.timeout_seconds)


def command(body: ExecIn) -> Command:
    return Command(tuple(body.cmd), body.stdin, body.timeout_seconds)


def template(info: TemplateInfo) -> TemplateOut:
    return TemplateOut(
        name=info.name,
        provider=PROVIDER,
        cpu_count=info.cpu_count,
        memory_mb=info.memory_mb,
        description=f"corral template {info.name!r}",
    )


def session(sandbox: Sandbox, base_url: str) -> SessionOut:
    deadline = sandbox.deadline_at or sandbox.ended_at or sandbox.created_at
    return SessionOut(
        session_id=sandbox.id,
        template=sandbox.template,
        status=_STATUS[sandbox.status],
        provisioned_at=_time(sandbox.created_at),
        deadline_at=_time(deadline),
        last_activity_at=_time(sandbox.last_active_at),
        metadata={k: v for k, v in sandbox.metadata.items() if k not in (NAMESPACE, CREATOR)},
        gateway=GatewayOut(base_url=base_url, url_template=URL_TEMPLATE),
    )


def health(sandbox: Sandbox) -> HealthOut:
    return HealthOut(
        session_id=sandbox.id, status=_HEALTH[sandbox.status], last_activity_at=_time(sandbox.last_active_at)
    )


def executed(done: Executed) -> ExecOut:
    result = done.result
    return ExecOut(
        stdout=result.stdout.decode("utf-8", "replace"),
        stderr=result.stderr.decode("utf-8", "replace"),
        exit_code=result.exit_code,
        elapsed_ms=done.elapsed_ms,
        truncated=result.truncated,
    )


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
