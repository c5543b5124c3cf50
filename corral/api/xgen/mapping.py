"""xgen bodies to corral's requests, corral's records to xgen bodies: the only place
that knows both (decisions in the package docstring)."""

from __future__ import annotations

import math
import re
from datetime import datetime

from corral.api.xgen.schemas import CreateBody, ExecBody, ExecOut, Resources, SandboxOut
from corral.domain import ExecRequest, ExecResult, Sandbox, SandboxStatus
from corral.errors import ExecTimeout, InvalidInput
from corral.services import workspace
from corral.services.sandboxes import CreateSandbox, end_at

TEMPLATES = ("base", "nodejs", "python", "go", "gui")
CAPABILITIES = frozenset({"sudo", "git-ssh", "browser"})
DEFAULT_LIFETIME_S = 3600
MAX_LIFETIME_S = 86400
MAX_PORTS = 20
MAX_METADATA = 20
MAX_METADATA_KEY = 63
MAX_METADATA_VALUE = 256
EXEC_TIMEOUT_S = 30
MAX_EXEC_TIMEOUT_S = 3600

STATUS = {
    SandboxStatus.STARTING: "starting",
    SandboxStatus.RUNNING: "running",
    SandboxStatus.HIBERNATED: "stopped",  # hibernated through another surface; it wakes on use
    SandboxStatus.PAUSED: "running",  # frozen by its idle timeout or another surface; resumed on use
    SandboxStatus.STOPPED: "stopped",
    SandboxStatus.ERROR: "error",
}

_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?\s*$")
_UNIT_MIB = {
    None: 1.0,
    "Ki": 1 / 1024,
    "Mi": 1.0,
    "Gi": 1024.0,
    "Ti": 1024.0**2,
    "k": 1000 / 2**20,
    "K": 1000 / 2**20,
    "M": 1e6 / 2**20,
    "G": 1e9 / 2**20,
    "T": 1e12 / 2**20,
}


def timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, whole seconds."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def mib(value: int | str | None, field: str) -> int | None:
    """MiB of a memory or disk quantity (see ``schemas.Resources``)."""
    if value is None:
        return None
    if isinstance(value, int):
        amount = float(value)
    else:
        match = _QUANTITY.match(value)
        if match is None:
            raise InvalidInput(f"{field} must be MiB or a quantity such as 512Mi or 2Gi", field=field)
        amount = float(match.group(1)) * _UNIT_MIB[match.group(2)]
    if not 0 < amount < 2**40:
        raise InvalidInput(f"{field} must be above 0", field=field)
    return math.ceil(amount)


def cores(value: float | str | None) -> int | None:
    """Whole cores (rounded up) of ``resources.cpu``."""
    if value is None:
        return None
    amount: float
    if isinstance(value, str):
        text = value.strip()
        try:
            amount = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise InvalidInput(
                "resources.cpu must be cores, such as 2 or 500m", field="resources.cpu"
            ) from None
    else:
        amount = float(value)
    if not 0 < amount < 1024:
        raise InvalidInput("resources.cpu must be above 0", field="resources.cpu")
    return math.ceil(amount)


def capabilities(names: list[str] | None) -> frozenset[str]:
    found = frozenset(names or ())
    unknown = sorted(found - CAPABILITIES)
    if unknown:
        raise InvalidInput(
            f"unknown capability {unknown[0]!r}: one of {', '.join(sorted(CAPABILITIES))}",
            field="capabilities",
        )
    return found


def ports(values: list[int] | None) -> list[int]:
    values = values or []
    if len(values) > MAX_PORTS:
        raise InvalidInput(f"at most {MAX_PORTS} ports", field="ports")
    for port in values:
        if not 1 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range 1-65535", field="ports")
    if len(set(values)) != len(values):
        raise InvalidInput("a port is given twice", field="ports")
    return values


def metadata(values: dict[str, str] | None) -> dict[str, str]:
    values = values or {}
    if len(values) > MAX_METADATA:
        raise InvalidInput(f"at most {MAX_METADATA} metadata entries", field="metadata")
    for key, value in values.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise InvalidInput(f"metadata keys are 1 to {MAX_METADATA_KEY} characters", field="metadata")
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidInput(f"metadata.{key}: at most {MAX_METADATA_VALUE} characters", field="metadata")
    return values


def create_request(body: CreateBody, template: str) -> CreateSandbox:
    """The create of an xgen body (checked above; ``template`` as the desktop chose it)."""
    lifetime = DEFAULT_LIFETIME_S if body.timeout_seconds is None else body.timeout_seconds
    if not 1 <= lifetime <= MAX_LIFETIME_S:
        raise InvalidInput(f"timeout_seconds must be between 1 and {MAX_LIFETIME_S}", field="timeout_seconds")
    resources = body.resources or Resources()
    return CreateSandbox(
        template=template,
        cpu_count=cores(resources.cpu),
        memory_mb=mib(resources.memory, "resources.memory"),
        disk_mb=mib(resources.disk, "resources.disk"),
        timeout_s=0,  # no idle timeout: the lifetime alone ends it
        lifetime_s=lifetime,
        envs=dict(body.env or {}),
        metadata=metadata(body.metadata),
    )


def template_of(body: CreateBody) -> str:
    template = body.template or "base"
    if template not in TEMPLATES:
        raise InvalidInput(
            f"unknown template {template[:64]!r}: one of {', '.join(TEMPLATES)}", field="template"
        )
    return template


def sandbox_out(
    sandbox: Sandbox, base_url: str, preview_urls: dict[str, str], vnc_url: str | None
) -> SandboxOut:
    expires = sandbox.deadline_at or end_at(sandbox) or sandbox.ended_at or sandbox.last_active_at
    return SandboxOut(
        id=sandbox.id,
        status=STATUS.get(sandbox.status, "error"),
        template=sandbox.template,
        ws_url=f"{base_url.rstrip('/')}/api/v1/sandboxes/{sandbox.id}/ws",
        created_at=timestamp(sandbox.created_at),
        expires_at=timestamp(expires),
        preview_urls=preview_urls or None,
        vnc_url=vnc_url,
        metadata=dict(sandbox.metadata) or None,
    )


def exec_request(body: ExecBody) -> ExecRequest:
    if not body.command:
        raise InvalidInput("command is required", field="command")
    timeout = EXEC_TIMEOUT_S if body.timeout_seconds is None else body.timeout_seconds
    if not 0 < timeout <= MAX_EXEC_TIMEOUT_S:
        raise InvalidInput(
            f"timeout_seconds must be between 1 and {MAX_EXEC_TIMEOUT_S}", field="timeout_seconds"
        )
    cwd = body.cwd or None
    if cwd is not None and not cwd.startswith("/"):
        cwd = workspace.path(cwd, "cwd")
    return ExecRequest(body.command, tuple(body.args), dict(body.env or {}), cwd, float(timeout))


def exec_out(result: ExecResult, timeout_s: float | None) -> ExecOut:
    """The answer, or ExecTimeout (504 EXEC_TIMEOUT) when the command ran out of time."""
    if result.timed_out:
        raise ExecTimeout(f"the command did not finish within {timeout_s:g} seconds")
    return ExecOut(
        exit_code=result.exit_code,
        stdout=result.stdout.decode(errors="replace"),
        stderr=result.stderr.decode(errors="replace"),
    )
