"""Credentials of the xgen surface, read with ``corral.api.credentials``:

    Authorization: Bearer <token>    the token of POST /auth/token (a user JWT), or a key
    Authorization: ApiKey <key>      an API key ek_<id>_<secret>
    ?token=<token or key>            on the WebSocket only (browsers cannot set its headers)

Anything else is 401 UNAUTHORIZED (a forged or expired token too). Rate limited per
principal (``rate_limit_xgen``) by ``corral.api.guard.admit``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from corral.api.credentials import is_api_key, is_jwt, read
from corral.api.guard import admit
from corral.auth.principal import Principal
from corral.auth.ratelimit import XGEN
from corral.core import Core
from corral.errors import Unauthenticated

MISSING = "missing credential: send Authorization: Bearer <token> or Authorization: ApiKey <key>"


def get_core(conn: HTTPConnection) -> Core:
    core: Core = conn.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


async def principal(conn: HTTPConnection, core: CoreDep) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, forged or expired credential."""

    async def authenticate() -> Principal:
        creds = read(conn.scope)
        scheme, _, rest = (creds.authorization or "").partition(" ")
        credential = creds.bearer
        if scheme.lower() == "apikey":
            credential = rest.strip()
            if not is_api_key(credential):
                raise Unauthenticated("Authorization: ApiKey takes an API key ek_<id>_<secret>")
        elif creds.authorization and not credential:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>' or 'ApiKey <key>'")
        if not credential and conn.scope["type"] == "websocket":
            credential = creds.query("token")
        if not credential:
            raise Unauthenticated(MISSING)
        if is_api_key(credential):
            return await core.auth.authenticate_key(credential)
        if is_jwt(credential):
            return await core.auth.authenticate_token(credential)
        raise Unauthenticated("the credential must be a token from /api/v1/auth/token or an API key")

    return await admit(conn, core, XGEN, authenticate)


PrincipalDep = Annotated[Principal, Depends(principal)]
