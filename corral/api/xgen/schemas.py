"""Request and response bodies of the xgen surface (snake_case, as in spec 002).

Types are strict (a string for a number is a 400 naming the field); ranges, sizes and
names are checked by ``mapping.py`` (400 INVALID_PARAMETER naming the field). Fields a
body does not know are ignored, as xgen's server does.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from corral.api.bodies import JsonBody


class TokenBody(JsonBody):
    api_key: str | None = None


class TokenOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str
    expires_at: str  # RFC 3339, UTC
    expires_in: int  # seconds


class Resources(JsonBody):
    """``cpu``: cores (a number, or Kubernetes' ``"500m"``/``"2"``); ``memory`` and
    ``disk``: MiB as a number, or a quantity such as ``"512Mi"``, ``"2Gi"``, ``"1G"``."""

    model_config = ConfigDict(strict=True)

    cpu: StrictInt | StrictFloat | StrictStr | None = None
    memory: StrictInt | StrictStr | None = None
    disk: StrictInt | StrictStr | None = None


class CreateBody(JsonBody):
    model_config = ConfigDict(strict=True)

    template: StrictStr | None = None
    timeout_seconds: StrictInt | None = None
    resources: Resources | None = None
    env: dict[StrictStr, StrictStr] | None = None
    ports: list[StrictInt] | None = None
    gui: StrictBool | None = None
    metadata: dict[StrictStr, StrictStr] | None = None
    capabilities: list[StrictStr] | None = None


class SandboxOut(BaseModel):
    """A sandbox; ``preview_urls``, ``vnc_url`` and ``metadata`` are left out when empty."""

    id: str
    status: str  # starting, running, stopping, stopped, error
    template: str
    ws_url: str
    created_at: str
    expires_at: str
    preview_urls: dict[str, str] | None = None
    vnc_url: str | None = None
    metadata: dict[str, str] | None = None


class ExecBody(JsonBody):
    model_config = ConfigDict(strict=True)

    command: StrictStr | None = None
    args: list[StrictStr] = Field(default_factory=list)
    env: dict[StrictStr, StrictStr] | None = None
    cwd: StrictStr | None = None
    timeout_seconds: StrictInt | StrictFloat | None = None


class ExecOut(BaseModel):
    exit_code: int
    stdout: str
    stderr: str


class ServiceOut(BaseModel):
    port: int
    preview_url: str


class ErrorOut(BaseModel):
    error: str
    code: str
    details: str | None = None
