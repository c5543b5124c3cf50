"""Request and response bodies of the OpenComputer surface, with the spec's camelCase names.

Requests ignore fields they do not know (the SDKs send ``burst``, ``secretStore``,
``previewAuth``, ``sandboxFamily``, ...) and are strict about the types of the fields
they do know: ``"2"`` or ``true`` where an integer belongs is a 400 naming the field.
Ranges that depend on settings (``cpuCount``, ``memoryMB``, ...) are checked by the
services, so there is one source of truth for them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- requests -----------------------------------------------------------------------


class CreateSandboxBody(_Body):
    templateID: str | None = None
    timeout: int | None = None
    cpuCount: int | None = None
    memoryMB: int | None = None
    diskMB: int | None = None
    envs: dict[str, str] | None = None
    metadata: dict[str, str] | None = None


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


class TokenOut(_Out):
    token: str


class ExecResultOut(_Out):
    exitCode: int
    stdout: str
    stderr: str


class ExecHandleOut(_Out):
    execId: str


class ExecStatusOut(_Out):
    execId: str
    running: bool
    exitCode: int | None
    stdout: str
    stderr: str
    error: str | None = None


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
