"""Credentials of this surface: ``Authorization: Bearer`` with an API key
``ek_<id>_<secret>`` (what copass-core sends, on every request) or a user JWT, read with
``corral.api.credentials``; anything else is 401. Tenancy is the credential's org.
Rate limited per principal (``rate_limit_copass``) by ``corral.api.guard.admit``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api.credentials import is_api_key, is_jwt, read
from corral.api.guard import admit
from corral.auth.principal import Principal
from corral.auth.ratelimit import COPASS
from corral.core import Core
from corral.errors import Unauthenticated

MISSING = "missing credential: send Authorization: Bearer <API key ek_<id>_<secret> or user JWT>"
_scheme = HTTPBearer(auto_error=False, description="an API key ek_<id>_<secret> or a user JWT")


def get_core(conn: HTTPConnection) -> Core:
    core: Core = conn.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


async def principal(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, forged or expired credential."""

    async def authenticate() -> Principal:
        creds = read(conn.scope)
        credential = creds.bearer
        if not credential:
            raise Unauthenticated(
                MISSING
                if creds.authorization is None
                else "the Authorization header must be 'Bearer <credential>'"
            )
        if is_api_key(credential):
            return await core.auth.authenticate_key(credential)
        if is_jwt(credential):
            return await core.auth.authenticate_token(credential)
        raise Unauthenticated("the credential must be an API key ek_<id>_<secret> or a user JWT")

    return await admit(conn, core, COPASS, authenticate)


PrincipalDep = Annotated[Principal, Depends(principal)]
