"""The Copass compute routes' bodies (copass-core 1.4.9's, the names and casing it
sends and reads; see corral/api/copass/__init__.py). Requests are strict: a string
where one is due, a map of strings to strings, an integer (never a float or a string of
digits); unknown fields are ignored, as a client of a newer version may send them.
Answers never hold null where the client reads an integer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr


class CreateSessionIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    template: StrictStr
    env_vars: dict[StrictStr, StrictStr] | None = None
    timeout_seconds: StrictInt | None = None
    metadata: dict[StrictStr, StrictStr] | None = None


class ExecIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    cmd: list[StrictStr]
    stdin: StrictStr | None = None
    timeout_seconds: StrictInt | None = None


class TemplateOut(BaseModel):
    name: str
    provider: str
    cpu_count: int
    memory_mb: int
    description: str


class TemplatesOut(BaseModel):
    templates: list[TemplateOut]


class GatewayOut(BaseModel):
    base_url: str
    url_template: str
    kind: Literal["edge-proxy-v1"] = "edge-proxy-v1"


class SessionOut(BaseModel):
    session_id: str
    template: str
    status: str  # provisioning | running | idle | stopped | archived | failed
    provisioned_at: str
    deadline_at: str
    last_activity_at: str
    metadata: dict[str, str]
    gateway: GatewayOut


class SessionsOut(BaseModel):
    sessions: list[SessionOut]


class StoppedOut(BaseModel):
    session_id: str
    status: Literal["stopped"] = "stopped"


class ExecOut(BaseModel):
    stdout: str
    stderr: str
    exit_code: int
    elapsed_ms: int
    truncated: bool


class HealthOut(BaseModel):
    session_id: str
    status: str  # ready | starting | stopped | errored
    last_activity_at: str
