"""Request and response bodies of the xgen surface (snake_case, as in spec 002)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from corral.api.bodies import JsonBody


class TokenBody(JsonBody):
    api_key: str | None = None


class TokenOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str
    expires_at: str  # RFC 3339, UTC
    expires_in: int  # seconds


class ErrorOut(BaseModel):
    error: str
    code: str
    details: str | None = None
