"""E2B bodies to corral's requests, and corral's sandboxes to E2B bodies: the only place
that knows both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.api.e2b.schemas import (
    ListedSandboxOut,
    MetricOut,
    NewSandbox,
    SandboxDetailOut,
    SandboxOut,
    State,
)
from corral.domain import DiskUsage, Sandbox, SandboxStatus
from corral.domain.events import Event
from corral.domain.usage import Usage
from corral.errors import NotFound
from corral.services.interpreter import INTERPRETER_TEMPLATE
from corral.services.sandboxes import CreateSandbox

ENVD_VERSION = "0.6.4"
"""The envd version corral's envd answers as: the newest the pinned SDK gates a
feature on (``e2b.envd.versions``), so the SDK uses every feature it has."""
CLIENT_ID = "corral"
DEFAULT_TIMEOUT_S = 300  # the SDK's default too
NO_END = timedelta(days=30)  # endAt of a sandbox without a timeout
PAUSED = frozenset({SandboxStatus.HIBERNATED, SandboxStatus.PAUSED})
TEMPLATES = {"code-interpreter-v1": INTERPRETER_TEMPLATE}  # E2B's names of corral's templates


def create_request(body: NewSandbox) -> CreateSandbox:
    return CreateSandbox(
        template=TEMPLATES.get(body.templateID, body.templateID),
        timeout_s=DEFAULT_TIMEOUT_S if body.timeout is None else body.timeout,
        envs=dict(body.envVars or {}),
        metadata=dict(body.metadata or {}),
    )


def state_of(sandbox: Sandbox) -> State:
    """running or paused; NotFound for a sandbox that is neither (E2B forgets them)."""
    if sandbox.status in PAUSED:
        return "paused"
    if sandbox.live:
        return "running"
    raise NotFound(f"sandbox {sandbox.id} not found")


def sandbox_out(sandbox: Sandbox, token: str, domain: str | None) -> SandboxOut:
    return SandboxOut(
        templateID=sandbox.template,
        sandboxID=sandbox.id,
        clientID=CLIENT_ID,
        envdVersion=ENVD_VERSION,
        alias=sandbox.template,
        envdAccessToken=token,
        trafficAccessToken=token,  # e2b_code_interpreter's only credential on some calls
        domain=domain,
    )


def end_at(sandbox: Sandbox) -> datetime:
    """When its timeout runs out, as things stand (idle since its last use)."""
    if sandbox.timeout_s:
        end = sandbox.last_active_at + timedelta(seconds=sandbox.timeout_s)
        return max(end, sandbox.hold_until) if sandbox.hold_until else end
    return sandbox.deadline_at or sandbox.created_at + NO_END


def listed_out(sandbox: Sandbox) -> ListedSandboxOut:
    return ListedSandboxOut.model_validate(_listed(sandbox))


def detail_out(sandbox: Sandbox, domain: str | None) -> SandboxDetailOut:
    return SandboxDetailOut.model_validate({**_listed(sandbox), "domain": domain})


def _listed(sandbox: Sandbox) -> dict[str, object]:
    return {
        "templateID": sandbox.template,
        "alias": sandbox.template,
        "sandboxID": sandbox.id,
        "clientID": CLIENT_ID,
        "startedAt": sandbox.created_at,
        "endAt": end_at(sandbox),
        "cpuCount": sandbox.limits.cpu_count,
        "memoryMB": sandbox.limits.memory_mb,
        "diskSizeMB": sandbox.limits.disk_mb,
        "metadata": sandbox.metadata,
        "state": state_of(sandbox),
        "envdVersion": ENVD_VERSION,
    }


def metric_out(sandbox: Sandbox, usage: Usage, disk: DiskUsage, now: datetime) -> MetricOut:
    """One reading now; ``cpuUsedPct`` is the average over the sandbox's life (the
    kernel's counter divided by the time and CPUs it had)."""
    elapsed = max((now - sandbox.created_at).total_seconds(), 1e-3)
    cpus = sandbox.limits.cpu_count
    return MetricOut(
        timestamp=now,
        timestampUnix=int(now.timestamp()),
        cpuCount=cpus,
        cpuUsedPct=round(min(100.0, usage.cpu_seconds / (elapsed * cpus) * 100), 2),
        memUsed=usage.memory_bytes or 0,
        memTotal=sandbox.limits.memory_mb * 1024 * 1024,
        memCache=0,
        diskUsed=disk.used,
        diskTotal=disk.total,
    )


def log_line(event: Event) -> dict[str, object]:
    """An audit record as a log line (v1's ``logs``)."""
    return {"timestamp": event.at.astimezone(UTC).isoformat(), "line": _message(event)}


def log_entry(event: Event) -> dict[str, object]:
    """An audit record as a structured log entry (``logEntries`` and v2's ``logs``)."""
    fields = {key: str(value) for key, value in event.data.items()}
    return {
        "timestamp": event.at.astimezone(UTC).isoformat(),
        "level": "info",
        "message": _message(event),
        "fields": {"kind": event.kind, **fields},
    }


def _message(event: Event) -> str:
    details = " ".join(f"{key}={value}" for key, value in event.data.items())
    return f"{event.kind} {details}".strip()
