"""Credentials of this surface: ``Authorization: Bearer`` with an API key
``ek_<id>_<secret>`` (workspace keys) or a user JWT, read with ``corral.api.credentials``;
on the read routes of a run also its publicAccessToken (``pat_...``, Bearer or
``?token=``). Anything else is 401. Rate limited per principal (``rate_limit_runs``) by
``corral.api.guard.admit``; a run token has a bucket of its own.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from corral.api.credentials import is_api_key, is_jwt, read
from corral.api.guard import admit
from corral.auth.principal import Principal, Role
from corral.auth.ratelimit import RUNS
from corral.auth.scopes import Scope
from corral.core import Core
from corral.errors import Unauthenticated
from corral.services.runs import TOKEN_PREFIX, Reader, RunToken

MISSING = "missing credential: send Authorization: Bearer <API key>"
_scheme = HTTPBearer(
    auto_error=False, description="an API key ek_<id>_<secret> (or a run's publicAccessToken)"
)


def get_core(conn: HTTPConnection) -> Core:
    core: Core = conn.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


def _credential(conn: HTTPConnection) -> str:
    creds = read(conn.scope)
    if not creds.bearer and creds.authorization:
        raise Unauthenticated("the Authorization header must be 'Bearer <API key>'")
    return creds.bearer or creds.query("token")


async def principal(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Principal:
    """The caller; Unauthenticated for a missing, malformed, revoked or wrong credential."""

    async def authenticate() -> Principal:
        credential = _credential(conn)
        if not credential:
            raise Unauthenticated(MISSING)
        if is_api_key(credential):
            return await core.auth.authenticate_key(credential)
        if is_jwt(credential):
            return await core.auth.authenticate_token(credential)
        raise Unauthenticated("the credential must be an API key ek_<id>_<secret>")

    return await admit(conn, core, RUNS, authenticate)


async def reader(conn: HTTPConnection, core: CoreDep, _bearer: object = Security(_scheme)) -> Reader:
    """The caller of a run's read routes: a principal, or the run's token (checked by
    the service against the run)."""
    credential = _credential(conn)
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
