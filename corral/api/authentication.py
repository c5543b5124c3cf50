"""Every surface's principal dependency: ``principal(conn, core, surface, credential,
refusal)``, and ``CoreDep`` (the app's ``Core``, for the routes).

A surface's ``auth.py`` says only what is its own:

- ``credential``: where it takes the credential from, a function of the request's
  ``Credentials`` (``corral.api.credentials.read``) that returns it, or raises
  Unauthenticated with the surface's own 401 text when it is missing or sent in the
  wrong scheme (``Authorization: Basic ...``);
- ``refusal``: what its 401 says of a credential of neither form, and ``tokens``
  whether it takes JWTs beside API keys (``AuthService.authenticate`` decides which);
- ``check``: what it refuses of a valid principal before charging it (the OpenComputer
  control plane's Forbidden for a worker token);
- ``surface``: its rate-limit name (``corral.auth.ratelimit``).

All of it runs inside ``corral.api.guard.admit``, in this order: reading (a credential
header sent twice is InvalidInput, a 400, uncharged), finding, authenticating (an
Unauthenticated is charged to the client's address, and past its limit is a 429),
``check``, then the principal's own bucket and ``X-Client-Id``. Errors are raised
here and rendered by the surface's ``errors.py``, in its envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from corral.api.credentials import Credentials, read
from corral.api.guard import admit
from corral.auth.principal import Principal
from corral.auth.service import NEITHER
from corral.core import Core


async def get_core(conn: HTTPConnection) -> Core:
    core: Core = conn.app.state.core
    return core


CoreDep = Annotated[Core, Depends(get_core)]


def _any(_principal: Principal) -> None:
    """Every valid principal is taken."""


async def principal(
    conn: HTTPConnection,
    core: Core,
    surface: str,
    credential: Callable[[Credentials], str],
    refusal: str = NEITHER,
    *,
    tokens: bool = True,
    check: Callable[[Principal], None] = _any,
) -> Principal:
    """The caller of ``conn``, authenticated, checked and within ``surface``'s rate
    limit (see the module docstring)."""

    async def authenticate() -> Principal:
        found = await core.auth.authenticate(credential(read(conn.scope)), refusal, tokens=tokens)
        check(found)
        return found

    return await admit(conn, core, surface, authenticate)
