"""Between this surface's schemas and the domain: requests in, results out.

Output bytes are decoded as UTF-8 with replacement characters (the spec's bodies are
JSON strings). Times are RFC 3339 in UTC with a ``Z``, to the second, as in the spec.
Path ids that do not have the right form are NotFound, like ids nobody knows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from corral.api.opencomputer.schemas import (
    AuditEventOut,
    AuditPageOut,
    BindingOut,
    CheckpointOut,
    CreatedKeyOut,
    CreatedSandboxOut,
    CreateSandboxBody,
    ExecBody,
    ExecHandleOut,
    FileEntryOut,
    HibernateOut,
    KeyOut,
    PatchOut,
    PatchRunOut,
    PortOut,
    PreviewAuthConfig,
    PreviewOut,
    PtyOut,
    SandboxOut,
    SessionBody,
    SessionOut,
    TemplateOut,
)
from corral.auth.service import NewKey
from corral.domain import (
    ApiKey,
    Checkpoint,
    EgressPolicy,
    EventPage,
    ExecRequest,
    FileEntry,
    Patch,
    PatchRun,
    Sandbox,
    SessionInfo,
    SessionSpec,
    TemplateBuild,
)
from corral.domain.bindings import Binding
from corral.domain.egress import parse_policy
from corral.errors import NotFound
from corral.ids import is_valid
from corral.services.lifecycle import Hibernation
from corral.services.previews import OpenPort, PreviewLink
from corral.services.sandboxes import CreateSandbox, end_at
from corral.services.templates import TemplateInfo

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


def create_request(body: CreateSandboxBody | None, preview_token_hash: str | None = None) -> CreateSandbox:
    body = body or CreateSandboxBody()
    return CreateSandbox(
        template=body.templateID or None,
        cpu_count=body.cpuCount,
        memory_mb=body.memoryMB,
        disk_mb=body.diskMB,
        timeout_s=body.timeout,
        envs=dict(body.envs or {}),
        metadata=dict(body.metadata or {}),
        preview_token_hash=preview_token_hash,
        egress=_egress(body),
    )


def _egress(body: CreateSandboxBody) -> EgressPolicy:
    if body.egress is not None:
        return parse_policy(body.egress.mode, body.egress.allow, body.egress.deny, field="egress")
    if body.allowedHosts is not None:
        return parse_policy("deny_all", body.allowedHosts, field="allowedHosts")
    return EgressPolicy()


def is_public(config: PreviewAuthConfig | None) -> bool:
    return bool(config and config.public)


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


def sandbox_out(sandbox: Sandbox, connect_url: str, token: str, sandbox_domain: str) -> SandboxOut:
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
        sandboxDomain=sandbox_domain,
        error=sandbox.error,
        patches=[patch_run_out(run) for run in sandbox.patches] if sandbox.checkpoint_id else None,
    )


def patch_run_out(run: PatchRun) -> PatchRunOut:
    return PatchRunOut(
        patchID=run.patch_id,
        sequence=run.sequence,
        status=run.status,
        exitCode=run.exit_code,
        error=run.error,
    )


def checkpoint_out(cp: Checkpoint) -> CheckpointOut:
    return CheckpointOut(
        id=cp.id,
        sandboxID=cp.sandbox_id,
        sandboxId=cp.sandbox_id,
        name=cp.name,
        status=cp.status.value,
        sizeBytes=cp.size_bytes,
        createdAt=rfc3339(cp.created_at),
        error=cp.error,
    )


def patch_out(patch: Patch) -> PatchOut:
    return PatchOut(
        id=patch.id,
        checkpointId=patch.checkpoint_id,
        script=patch.script,
        description=patch.description,
        strategy=patch.strategy,
        sequence=patch.sequence,
        createdAt=rfc3339(patch.created_at),
    )


def hibernate_out(h: Hibernation) -> HibernateOut:
    return HibernateOut(
        sandboxID=h.sandbox_id, hibernationKey=h.key, sizeBytes=h.size_bytes, status=h.status.value
    )


def template_out(t: TemplateInfo | TemplateBuild) -> TemplateOut:
    if isinstance(t, TemplateBuild):
        t = TemplateInfo(t.id, t.name, t.tag, t.status.value, False, t.created_at, t.error, t.digest)
    return TemplateOut(
        templateID=t.id,
        id=t.id,
        name=t.name,
        tag=t.tag,
        status=t.status,
        createdAt=rfc3339(t.created_at) if t.created_at else None,
        builtin=t.builtin,
        error=t.error,
    )


def created_sandbox_out(
    sandbox: Sandbox, connect_url: str, token: str, sandbox_domain: str, preview_token: str
) -> CreatedSandboxOut:
    out = sandbox_out(sandbox, connect_url, token, sandbox_domain)
    return CreatedSandboxOut(**out.model_dump(), previewAuthToken=preview_token)


def preview_out(link: PreviewLink) -> PreviewOut:
    p = link.preview
    return PreviewOut(
        id=p.id,
        sandboxId=p.sandbox_id,
        hostname=link.hostname,
        port=p.port,
        sslStatus="none",  # corral serves previews over its own scheme; it issues no certificates
        createdAt=rfc3339(p.created_at),
        url=link.url,
    )


def port_out(port: OpenPort) -> PortOut:
    preview_id = port.link.preview.id if port.link else None
    return PortOut(port=port.port, hostname=port.hostname, url=port.url, previewId=preview_id)


def exec_handle_out(exec_id: str) -> ExecHandleOut:
    return ExecHandleOut(execId=exec_id)


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
    return FileEntryOut(name=shown(entry.name), isDir=entry.is_dir, size=entry.size, path=shown(entry.path))


def shown(text: str) -> str:
    """``text`` as JSON can carry it. A file name is any bytes but ``/`` and NUL; those
    that are not UTF-8 reach the host as lone surrogates (``surrogateescape``), which no
    UTF-8 encoder takes: each becomes U+FFFD (the listing shows such a name, it cannot
    spell it; the page cursors still carry the raw bytes)."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return text.encode("utf-8", "replace").decode("utf-8")


def audit_page_out(page: EventPage) -> AuditPageOut:
    return AuditPageOut(
        events=[
            AuditEventOut(
                id=e.id or 0,
                at=e.at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                kind=e.kind,
                sandboxID=e.sandbox_id,
                keyID=e.key_id,
                clientID=e.client_id,
                data=e.data,
            )
            for e in page.events
        ],
        nextCursor=None if page.next_cursor is None else str(page.next_cursor),
    )


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(
        id=key.id,
        role=key.role,
        name=key.name,
        createdAt=rfc3339(key.created_at),
        lastUsedAt=rfc3339(key.last_used_at) if key.last_used_at else None,
        revokedAt=rfc3339(key.revoked_at) if key.revoked_at else None,
    )


def created_key_out(new: NewKey) -> CreatedKeyOut:
    return CreatedKeyOut(key=new.raw, **key_out(new.key).model_dump())


def binding_out(binding: Binding) -> BindingOut:
    return BindingOut(
        name=binding.name, url=binding.url, header=binding.header, createdAt=rfc3339(binding.created_at)
    )
