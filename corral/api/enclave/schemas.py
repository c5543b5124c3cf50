"""Request and response bodies of the Enclave surface (camelCase, as in spec 001).

Types are strict where the spec's types are (a string for a number is a 400 naming the
field); ranges and the rest are checked by ``corral.domain.sessions``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from corral.api.bodies import JsonBody


class Limits(JsonBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    memoryMiB: StrictInt | None = None
    wallClockSeconds: StrictInt | None = None
    cpuMillicores: StrictInt | None = None
    cpus: StrictInt | StrictFloat | None = None
    cpuSeconds: StrictInt | StrictFloat | None = None
    pids: StrictInt | None = None


class Egress(JsonBody):
    model_config = ConfigDict(extra="forbid", strict=True)

    mode: StrictStr | None = None
    allow: list[StrictStr] = Field(default_factory=list)


class CreateSessionRequest(JsonBody):
    code: StrictStr | None = None
    language: StrictStr | None = None
    limits: Limits | None = None
    egress: Egress | None = None
    serviceBindings: list[StrictStr] = Field(default_factory=list)
    webhookUrl: StrictStr | None = None
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class SessionLimitsOut(BaseModel):
    memoryMiB: int
    wallClockSeconds: int
    cpuMillicores: int
    cpuSeconds: float
    pids: int


class EgressOut(BaseModel):
    mode: str  # deny_all | allowlist
    allow: list[str]


class SessionResultOut(BaseModel):
    exitCode: int | None
    result: Any
    stdout: str
    stderr: str
    stdoutTruncated: bool
    stderrTruncated: bool
    killReason: str | None
    durationMs: int


class SessionOut(BaseModel):
    id: str
    orgId: str
    createdBy: str
    phase: str
    outcome: str | None
    language: str
    limits: SessionLimitsOut
    egress: EgressOut
    killReason: str | None
    error: str | None
    result: SessionResultOut | None
    backend: str
    labels: dict[str, str]
    serviceBindings: list[str]
    createdAt: str
    startedAt: str | None
    finishedAt: str | None


class SessionPage(BaseModel):
    sessions: list[SessionOut]
    nextCursor: str | None


class AuditEventOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    ts: str
    type: str


class AuditOut(BaseModel):
    events: list[AuditEventOut]


class ErrorOut(BaseModel):
    statusCode: int
    error: str
    message: str
    field: str | None = None
