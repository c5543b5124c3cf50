"""The E2B control plane's bodies, in its names and casing (what the ``e2b`` SDK's
generated client, ``e2b.api.client.models``, sends and reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["running", "paused"]


class NewSandbox(BaseModel):
    """``POST /sandboxes`` and ``POST /v2/sandboxes`` (the SDK's NewSandbox/NewSandboxV2;
    fields corral does not act on are accepted and ignored: see the package docstring)."""

    model_config = ConfigDict(extra="ignore")

    templateID: str = Field(min_length=1, max_length=128)
    timeout: int | None = None
    metadata: dict[str, str] | None = None
    envVars: dict[str, str] | None = None
    autoPause: bool | None = None
    secure: bool | None = None
    allow_internet_access: bool | None = None


class TimeoutBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeout: int


class ConnectBody(BaseModel):
    """``POST /v2/sandboxes/{id}/connect`` and ``/sandboxes/{id}/connect``."""

    model_config = ConfigDict(extra="ignore")

    timeout: int | None = None


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    timeout: int | None = None
    autoPause: bool | None = None


class SandboxOut(BaseModel):
    """What a create, connect and resume answer (the SDK's ``Sandbox``)."""

    templateID: str
    sandboxID: str
    clientID: str
    envdVersion: str
    alias: str
    envdAccessToken: str
    trafficAccessToken: str | None
    domain: str | None


class ListedSandboxOut(BaseModel):
    """A sandbox in a list (the SDK's ``ListedSandbox``)."""

    templateID: str
    alias: str
    sandboxID: str
    clientID: str
    startedAt: datetime
    endAt: datetime
    cpuCount: int
    memoryMB: int
    diskSizeMB: int
    metadata: dict[str, str]
    state: State
    envdVersion: str


class SandboxDetailOut(ListedSandboxOut):
    """One sandbox (the SDK's ``SandboxDetail``). No envd token: ``connect`` hands one out."""

    domain: str | None


class MetricOut(BaseModel):
    timestamp: datetime
    timestampUnix: int
    cpuCount: int
    cpuUsedPct: float
    memUsed: int
    memTotal: int
    memCache: int
    diskUsed: int
    diskTotal: int


class LogsOut(BaseModel):
    logs: list[dict[str, object]]
    logEntries: list[dict[str, object]]


class LogsV2Out(BaseModel):
    logs: list[dict[str, object]]


class ErrorOut(BaseModel):
    code: int
    message: str
