"""Credentials of this surface: ``Authorization: Bearer`` with a user JWT (HS256,
signed with the server's JWT secret) or an API key ``ek_<id>_<secret>``, read with
``corral.api.credentials``; anything else is 401. A worker token (bound to one
sandbox) holds no ``sessions:*`` scope, so it is 403 on every route. Authenticated and
rate limited per principal (``rate_limit_enclave``) by ``corral.api.authentication``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials
from corral.auth.principal import Principal
from corral.auth.ratelimit import ENCLAVE
from corral.errors import Unauthenticated

CoreDep = authentication.CoreDep  # the routes' Core

MISSING = "missing credential: send Authorization: Bearer <user JWT or API key ek_<id>_<secret>>"
NEITHER = "the credential must be a user JWT or an API key ek_<id>_<secret>"
_scheme = HTTPBearer(auto_error=False, description="a user JWT or an API key ek_<id>_<secret>")


def _credential(creds: Credentials) -> str:
    if creds.bearer:
        return creds.bearer
    if creds.authorization:
        raise Unauthenticated("the Authorization header must be 'Bearer <user JWT or API key>'")
    raise Unauthenticated(MISSING)


async def principal(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, forged or expired credential."""
    return await authentication.principal(conn, core, ENCLAVE, _credential, NEITHER)


PrincipalDep = Annotated[Principal, Depends(principal)]
