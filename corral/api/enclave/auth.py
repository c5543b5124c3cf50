"""Credentials of this surface: ``Authorization: Bearer`` with a user JWT (HS256,
signed with the server's JWT secret) or an API key ``ek_<id>_<secret>``, read with
``corral.api.credentials``; anything else is 401. A worker token (bound to one
sandbox) holds no ``sessions:*`` scope, so it is 403 on every route. Rate limited per
principal (``rate_limit_enclave``) by ``corral.api.guard.admit``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api.credentials import is_api_key, is_jwt, read
from corral.api.guard import admit
from corral.auth.principal import Principal
from corral.auth.ratelimit import ENCLAVE
from corral.core import Core
from corral.errors import Unauthenticated

MISSING = "missing credential: send Authorization: Bearer <user JWT or API key ek_<id>_<secret>>"
_scheme = HTTPBearer(auto_error=False, description="a user JWT or an API key ek_<id>_<secret>")


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
            if creds.authorization:
                raise Unauthenticated("the Authorization header must be 'Bearer <user JWT or API key>'")
            raise Unauthenticated(MISSING)
        if is_api_key(credential):
            return await core.auth.authenticate_key(credential)
        if is_jwt(credential):
            return await core.auth.authenticate_token(credential)
        raise Unauthenticated("the credential must be a user JWT or an API key ek_<id>_<secret>")

    return await admit(conn, core, ENCLAVE, authenticate)


PrincipalDep = Annotated[Principal, Depends(principal)]
