"""Credentials of the E2B control plane: ``X-API-Key`` with a corral API key
``ek_<id>_<secret>`` (what the SDK sends from ``E2B_API_KEY``), read with
``corral.api.credentials``; anything else is 401. Tenancy is the key's org, what it may
do its role's (a viewer reads, and is refused every write: 403). Rate limited per
principal by ``corral.api.guard.admit`` with the OpenComputer control plane's limit
(``rate_limit_api``): both are the same tenant's API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from starlette.requests import HTTPConnection

from corral.api.credentials import is_api_key, read
from corral.api.guard import admit
from corral.auth.principal import Principal
from corral.auth.ratelimit import API
from corral.core import Core
from corral.errors import Unauthenticated

MISSING = "missing credential: send X-API-Key: <corral API key ek_<id>_<secret>> (E2B_API_KEY)"
_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="a corral API key")


def get_core(conn: HTTPConnection) -> Core:
    core: Core = conn.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


async def principal(conn: HTTPConnection, core: CoreDep, _key: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, revoked or wrong key."""

    async def authenticate() -> Principal:
        creds = read(conn.scope)
        creds.require_bare_api_key()
        if not creds.api_key:
            raise Unauthenticated(MISSING)
        if not is_api_key(creds.api_key):
            raise Unauthenticated("X-API-Key must be a corral API key ek_<id>_<secret>")
        return await core.auth.authenticate_key(creds.api_key)

    return await admit(conn, core, API, authenticate)


PrincipalDep = Annotated[Principal, Depends(principal)]
