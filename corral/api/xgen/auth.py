"""Credentials of the xgen surface, read with ``corral.api.credentials``:

    Authorization: Bearer <token>    the token of POST /auth/token (a user JWT), or a key
    Authorization: ApiKey <key>      an API key ek_<id>_<secret>
    ?token=<token or key>            on the WebSocket only (browsers cannot set its headers)

Anything else is 401 UNAUTHORIZED (a forged or expired token too). Authenticated and
rate limited per principal (``rate_limit_xgen``) by ``corral.api.authentication``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials, is_api_key
from corral.auth.principal import Principal
from corral.auth.ratelimit import XGEN
from corral.errors import Unauthenticated

CoreDep = authentication.CoreDep  # the routes' Core

MISSING = "missing credential: send Authorization: Bearer <token> or Authorization: ApiKey <key>"
NEITHER = "the credential must be a token from /api/v1/auth/token or an API key"


def _credential(creds: Credentials, websocket: bool) -> str:
    scheme, _, rest = (creds.authorization or "").partition(" ")
    credential = creds.bearer
    if scheme.lower() == "apikey":
        credential = rest.strip()
        if not is_api_key(credential):
            raise Unauthenticated("Authorization: ApiKey takes an API key ek_<id>_<secret>")
    elif creds.authorization and not credential:
        raise Unauthenticated("the Authorization header must be 'Bearer <token>' or 'ApiKey <key>'")
    if not credential and websocket:
        credential = creds.query("token")
    if not credential:
        raise Unauthenticated(MISSING)
    return credential


async def principal(conn: HTTPConnection, core: CoreDep) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, forged or expired credential."""
    websocket = conn.scope["type"] == "websocket"
    return await authentication.principal(
        conn, core, XGEN, lambda creds: _credential(creds, websocket), NEITHER
    )


PrincipalDep = Annotated[Principal, Depends(principal)]
