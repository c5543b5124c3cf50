"""Request and response bodies of the OpenComputer surface, with the spec's camelCase names.

Requests ignore fields they do not know (the SDKs send ``burst``, ``secretStore``,
``previewAuth``, ``sandboxFamily``, ...) and are strict about the types of the fields
they do know: ``"2"`` or ``true`` where an integer belongs is a 400 naming the field.
Ranges that depend on settings (``cpuCount``, ``memoryMB``, ...) are checked by the
services, so there is one source of truth for them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from corral.api.bodies import JsonBody


class _Body(JsonBody):
    """Strict about known fields, blind to unknown ones, text is Unicode (``corral.api.bodies``)."""


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests -----------------------------------------------------------------------


class PreviewAuthBody(_Body):
    scheme: str | None = None  # "bearer"
    token: str | None = None  # "auto" or an explicit token


class EgressBody(_Body):
    """Enclave's ``{mode, allow}`` shape, with corral's ``deny``."""

    mode: str | None = None  # "allow_all" | "deny_all"; only an allow list: deny_all
    allow: list[str] | None = None
    deny: list[str] | None = None


class NetworkBody(EgressBody):
    egress: EgressBody | None = None


class CreateSandboxBody(_Body):
    templateID: str | None = None
    timeout: int | None = None
    cpuCount: int | None = None
    memoryMB: int | None = None
    diskMB: int | None = None
    envs: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    previewAuth: PreviewAuthBody | None = None
    egress: EgressBody | None = None
    allowedHosts: list[str] | None = None  # OpenComputer's shape: deny all but these


class PreviewAuthConfig(_Body):
    public: bool | None = None  # no credential needed for this preview URL


class CreatePreviewBody(_Body):
    port: int
    domain: str | None = None
    authConfig: PreviewAuthConfig | None = None


class TimeoutBody(_Body):
    timeout: int


class ExecBody(_Body):
    cmd: str
    args: list[str] | None = None
    envs: dict[str, str] | None = None
    cwd: str | None = None
    timeout: int | None = None


class SessionBody(ExecBody):
    maxRunAfterDisconnect: int | None = None


class KillBody(_Body):
    signal: int | None = None


class PtyBody(_Body):
    cols: int | None = None
    rows: int | None = None
    shell: str | None = None


class ResizeBody(_Body):
    cols: int
    rows: int


# ---- responses ----------------------------------------------------------------------


class SandboxOut(_Out):
    sandboxID: str
    templateID: str
    status: str
    startedAt: str
    endAt: str | None
    cpuCount: int
    memoryMB: int
    diskMB: int
    metadata: dict[str, str]
    connectURL: str
    token: str
    sandboxDomain: str  # preview hosts are {sandboxID}-p{port}.{sandboxDomain}
    error: str | None = None  # why it stopped, or which checkpoint patch failed in it
    patches: list[PatchRunOut] | None = None  # forks: how its checkpoint's patches went

    @model_serializer(mode="wrap")
    def _spec_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``error`` and ``patches`` only when they say something: the spec's shape
        otherwise."""
        data: dict[str, Any] = handler(self)
        for name in ("error", "patches"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class PatchRunOut(_Out):
    patchID: str
    sequence: int
    status: str  # applied | failed | skipped
    exitCode: int | None
    error: str | None


class EgressOut(_Out):
    mode: str
    allow: list[str]
    deny: list[str]


class AllowedHostsOut(_Out):
    sandboxID: str
    egressAllowlist: list[str]
    egress: EgressOut


class CreatedSandboxOut(SandboxOut):
    previewAuthToken: str  # plaintext preview token, once; "" when preview auth is off


class PreviewOut(_Out):
    id: str
    sandboxId: str
    hostname: str
    port: int
    sslStatus: str
    createdAt: str
    url: str


class PreviewTokenOut(_Out):
    previewAuthToken: str


class PortOut(_Out):
    port: int
    hostname: str
    url: str
    previewId: str | None


class TokenOut(_Out):
    token: str


class ExecResultOut(_Out):
    exitCode: int
    stdout: str
    stderr: str
    truncated: bool | None = None  # present (true) only when output was dropped


class ExecHandleOut(_Out):
    execId: str


class ExecStatusOut(_Out):
    execId: str
    running: bool
    exitCode: int | None
    stdout: str
    stderr: str
    error: str | None = None
    truncated: bool | None = None  # present (true) only when output was dropped


class SessionOut(_Out):
    sessionID: str
    sandboxID: str
    command: str
    args: list[str]
    running: bool
    exitCode: int | None
    startedAt: str
    attachedClients: int


class PtyOut(_Out):
    sessionID: str
    sandboxID: str


class FileEntryOut(_Out):
    name: str
    isDir: bool
    size: int
    path: str


class EmptyOut(_Out):
    pass


class ErrorOut(_Out):
    error: str


# ---- audit trail and API keys (corral's extensions: routes_audit, routes_keys) -------


class AuditEventOut(_Out):
    id: int
    at: str  # RFC 3339, UTC, to the millisecond
    kind: str
    sandboxID: str | None
    keyID: str | None
    clientID: str | None
    data: dict[str, object]


class AuditPageOut(_Out):
    events: list[AuditEventOut]
    nextCursor: str | None  # pass as ?cursor= for the next page; null on the last one


class CreateKeyBody(_Body):
    role: str
    name: str | None = None


class KeyOut(_Out):
    id: str
    role: str
    name: str
    createdAt: str
    lastUsedAt: str | None
    revokedAt: str | None


class CreatedKeyOut(KeyOut):
    key: str  # ek_<id>_<secret>, shown only in this answer


class AddUserBody(_Body):
    email: str
    role: str
    name: str | None = None


class UserRoleBody(_Body):
    role: str


class UserOut(_Out):
    id: str
    email: str
    name: str
    role: str
    createdAt: str


class IdentityOut(_Out):
    orgID: str
    orgName: str
    role: str
    scopes: list[str]
    keyID: str | None
    userID: str | None
    email: str | None
    sandboxID: str | None


class NodeStatsOut(_Out):
    at: float
    liveSandboxes: int
    creates: int
    createSecondsSum: float
    createSecondsCount: int
    memoryTotalMB: int
    memoryAvailableMB: int
    memoryPromisedMB: int


class CreateBindingBody(_Body):
    name: str
    url: str
    header: str
    secret: str


class BindingOut(_Out):
    """A service binding as every answer shows it: never its secret."""

    name: str
    url: str
    header: str
    createdAt: str


# ---- checkpoints, patches, hibernation, templates ------------------------------------


class CreateCheckpointBody(_Body):
    name: str


class ForkBody(_Body):
    timeout: int | None = None
    envs: dict[str, str] | None = None


class CreatePatchBody(_Body):
    script: str
    description: str | None = None


class WakeBody(_Body):
    timeout: int | None = None


class BuildTemplateBody(_Body):
    name: str
    dockerfile: str
    tag: str | None = None


class CheckpointOut(_Out):
    id: str
    sandboxID: str
    sandboxId: str  # the SDKs' docs spell it both ways
    name: str
    status: str  # processing | ready | failed
    sizeBytes: int
    createdAt: str
    error: str | None = None


class PatchOut(_Out):
    id: str
    checkpointId: str
    script: str
    description: str
    strategy: str
    sequence: int
    createdAt: str


class CreatedPatchOut(_Out):
    patch: PatchOut


class HibernateOut(_Out):
    sandboxID: str
    hibernationKey: str
    sizeBytes: int
    status: str


class TemplateOut(_Out):
    templateID: str
    id: str
    name: str
    tag: str
    status: str  # ready | building | failed
    createdAt: str | None
    builtin: bool
    error: str | None = None


# ---- agent sessions (routes_agent) --------------------------------------------------


class AgentBody(_Body):
    prompt: str | None = None
    model: str | None = None
    systemPrompt: str | None = None
    allowedTools: list[str] | None = None
    permissionMode: str | None = None
    maxTurns: int | None = None
    cwd: str | None = None
    mcpServers: dict[str, Any] | None = None
    resume: str | None = None


class AgentPromptBody(_Body):
    text: str | None = None


class AgentSessionOut(_Out):
    sessionID: str
    sandboxID: str
    running: bool
    startedAt: str
    claudeSessionID: str
