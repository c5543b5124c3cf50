"""Credentials of the E2B control plane: ``X-API-Key`` with a corral API key
``ek_<id>_<secret>`` (what the SDK sends from ``E2B_API_KEY``), read with
``corral.api.credentials``; anything else (a JWT too) is 401. Tenancy is the key's org,
what it may do its role's (a viewer reads, and is refused every write: 403).
Authenticated and rate limited per principal by ``corral.api.authentication`` with the
OpenComputer control plane's limit (``rate_limit_api``): both are the same tenant's API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials
from corral.auth.principal import Principal
from corral.auth.ratelimit import API
from corral.errors import Unauthenticated

CoreDep = authentication.CoreDep  # the routes' Core

MISSING = "missing credential: send X-API-Key: <corral API key ek_<id>_<secret>> (E2B_API_KEY)"
NOT_A_KEY = "X-API-Key must be a corral API key ek_<id>_<secret>"
_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="a corral API key")


def _credential(creds: Credentials) -> str:
    creds.require_bare_api_key()
    if not creds.api_key:
        raise Unauthenticated(MISSING)
    return creds.api_key


async def principal(conn: HTTPConnection, core: CoreDep, _key: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, revoked or wrong key."""
    return await authentication.principal(conn, core, API, _credential, NOT_A_KEY, tokens=False)


PrincipalDep = Annotated[Principal, Depends(principal)]
