"""Credentials of this surface: ``Authorization: Bearer`` with an API key
``ek_<id>_<secret>`` (what copass-core sends, on every request) or a user JWT, read with
``corral.api.credentials``; anything else is 401. Tenancy is the credential's org.
Authenticated and rate limited per principal (``rate_limit_copass``) by
``corral.api.authentication``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials
from corral.auth.principal import Principal
from corral.auth.ratelimit import COPASS
from corral.errors import Unauthenticated

CoreDep = authentication.CoreDep  # the routes' Core

MISSING = "missing credential: send Authorization: Bearer <API key ek_<id>_<secret> or user JWT>"
NEITHER = "the credential must be an API key ek_<id>_<secret> or a user JWT"
_scheme = HTTPBearer(auto_error=False, description="an API key ek_<id>_<secret> or a user JWT")


def _credential(creds: Credentials) -> str:
    if not creds.bearer:
        raise Unauthenticated(
            MISSING
            if creds.authorization is None
            else "the Authorization header must be 'Bearer <credential>'"
        )
    return creds.bearer


async def principal(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, forged or expired credential."""
    return await authentication.principal(conn, core, COPASS, _credential, NEITHER)


PrincipalDep = Annotated[Principal, Depends(principal)]
