"""Routes of the xgen surface (see the package docstring). Handlers are thin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.requests import Request

from corral.api.guard import admit
from corral.api.xgen.schemas import ErrorOut, TokenBody, TokenOut
from corral.auth.principal import Principal
from corral.auth.ratelimit import XGEN
from corral.core import Core
from corral.errors import Unauthenticated

MISSING_KEY = 'missing api_key: send {"api_key": "ek_<id>_<secret>"}'


def get_core(request: Request) -> Core:
    core: Core = request.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]

router = APIRouter(
    tags=["xgen"],
    responses={
        400: {"model": ErrorOut, "description": "The body is not a JSON object"},
        401: {"model": ErrorOut, "description": "Missing or invalid API key"},
        429: {"model": ErrorOut, "description": "Rate limit exceeded (see Retry-After)"},
    },
)


@router.post("/auth/token", summary="Exchange an API key for a 15-minute token")
async def exchange_token(request: Request, core: CoreDep, body: TokenBody | None = None) -> TokenOut:
    api_key = (body.api_key if body else None) or ""

    async def authenticate() -> Principal:
        if not api_key.strip():
            raise Unauthenticated(MISSING_KEY)
        return await core.auth.authenticate_key(api_key)

    principal = await admit(request, core, XGEN, authenticate)
    issued = core.auth.issue_user_token(principal)
    return TokenOut(
        token=issued.token,
        expires_at=issued.expires_at.isoformat().replace("+00:00", "Z"),
        expires_in=issued.expires_in,
    )
