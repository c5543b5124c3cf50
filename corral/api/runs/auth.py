"""Credentials of this surface: ``Authorization: Bearer`` with an API key
``ek_<id>_<secret>`` (workspace keys) or a user JWT, read with ``corral.api.credentials``;
on the read routes of a run also its publicAccessToken (``pat_...``, Bearer or
``?token=``). Anything else is 401. Authenticated and rate limited per principal
(``rate_limit_runs``) by ``corral.api.authentication``; a run token has a bucket of its own.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials, read
from corral.api.guard import admit
from corral.auth.principal import Principal, Role
from corral.auth.ratelimit import RUNS
from corral.auth.scopes import Scope
from corral.errors import Unauthenticated
from corral.services.runs import TOKEN_PREFIX, Reader, RunToken

CoreDep = authentication.CoreDep  # the routes' Core

MISSING = "missing credential: send Authorization: Bearer <API key>"
NEITHER = "the credential must be an API key ek_<id>_<secret>"
_scheme = HTTPBearer(
    auto_error=False, description="an API key ek_<id>_<secret> (or a run's publicAccessToken)"
)


def _found(creds: Credentials) -> str:
    """The Bearer credential, else ``?token=``; "" for none."""
    if not creds.bearer and creds.authorization:
        raise Unauthenticated("the Authorization header must be 'Bearer <API key>'")
    return creds.bearer or creds.query("token")


def _credential(creds: Credentials) -> str:
    credential = _found(creds)
    if not credential:
        raise Unauthenticated(MISSING)
    return credential


async def principal(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, revoked or wrong credential."""
    return await authentication.principal(conn, core, RUNS, _credential, NEITHER)


async def reader(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Reader:
    """The caller of a run's read routes: a principal, or the run's token (checked by
    the service against the run)."""
    credential = _found(read(conn.scope))
    if not credential.startswith(TOKEN_PREFIX):
        return await principal(conn, core)
    subject = "pat:" + hashlib.sha256(credential.encode()).hexdigest()[:24]

    async def as_token() -> Principal:  # only for its rate-limit bucket
        return Principal(
            org_id=subject, role=Role.VIEWER, key_id=subject, granted=frozenset({Scope.SESSIONS_READ})
        )

    await admit(conn, core, RUNS, as_token)
    return RunToken(credential)


PrincipalDep = Annotated[Principal, Depends(principal)]
ReaderDep = Annotated[Reader, Depends(reader)]
