"""Credentials of this surface, as FastAPI dependencies that call ``core.auth``; read
by ``corral.api.credentials``.

Where a credential may be (first found wins):

    Authorization: Bearer <credential>     both surfaces
    X-API-Key: <credential>                both surfaces
    ?token=<credential>, ?api_key=<...>    WebSockets only (browsers cannot set headers)
    Sec-WebSocket-Protocol: corral, corral.credential.<credential>
                                           WebSockets only, kept out of URLs (the console)

A credential is recognised by its form, wherever it is sent: ``ek_...`` is an API key,
a three-part JWT is a worker token. The spec puts API keys on the control plane and
worker tokens on the worker routes, but the SDKs mix them (the Python SDK's PTY sends
the worker JWT as ``X-API-Key`` and ``?api_key=``), and since both surfaces are served
by this one process, the worker surface accepts either form. The control plane takes
API keys and user tokens only: a worker token there is 403, since it carries exactly
the scopes of its purpose, its own sandbox's worker routes (every other sandbox id is
404 on them); it never creates, lists or kills sandboxes, builds templates, or reaches
keys, audit, checkpoints or preview URLs.

Both surfaces differ only in what a 401 for a missing credential tells the client to
send. A header of the wrong form (``Authorization: Basic ...``, ``X-API-Key: Bearer
...``) is a 401 that says which form is expected.

Both go through ``corral.api.authentication``: ``AuthService.authenticate`` (the form
decides), the rate limit of the ``api`` surface (setting ``rate_limit_api``), and
``X-Client-Id`` into the principal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Security
from fastapi.security import APIKeyHeader, HTTPBearer
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials
from corral.auth.principal import Principal
from corral.auth.ratelimit import API
from corral.errors import Forbidden, Unauthenticated

CoreDep = authentication.CoreDep  # the routes' Core

# Declared for the OpenAPI document (the "Authorize" button of /docs); the values are
# read by ``_credential`` so that a header of the wrong form is reported, not ignored.
_api_key_scheme = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key ek_<id>_<secret>")
_bearer_scheme = HTTPBearer(auto_error=False, description="worker token (JWT) or API key")

NEITHER = "credential must be an API key (ek_<id>_<secret>) or a worker token (a JWT)"
_CONTROL_MISSING = "missing API key: send the header X-API-Key: ek_<id>_<secret>"
_WORKER_MISSING = (
    "missing token: send the header Authorization: Bearer <token> "
    "(the token of the sandbox's create or get response)"
)


def _reader(conn: HTTPConnection, missing: str, query: str) -> Callable[[Credentials], str]:
    """Where a route of ``conn`` finds its credential; a WebSocket's 401 for a missing
    one names the query parameter ``query`` too."""
    websocket = conn.scope["type"] == "websocket"
    if websocket:
        missing += f" or the query ?{query}="

    def credential(creds: Credentials) -> str:
        if creds.bearer:
            return creds.bearer
        if creds.api_key:
            creds.require_bare_api_key()
            return creds.api_key
        if websocket:
            if creds.protocol:
                return creds.protocol
            for name in ("token", "api_key"):
                value = creds.query(name)
                if value:
                    return value
        if creds.authorization:
            raise Unauthenticated("the Authorization header must be 'Bearer <API key or worker token>'")
        raise Unauthenticated(missing)

    return credential


def _no_worker_token(principal: Principal) -> None:
    if principal.sandbox_id is not None:
        raise Forbidden(
            "a worker token is good for its own sandbox's worker routes (/sandboxes/<id>/...) "
            "only, not for the control plane (/api): send an API key"
        )


async def control_principal(
    conn: HTTPConnection,
    core: CoreDep,
    _key: str | None = Security(_api_key_scheme),
    _bearer: object = Security(_bearer_scheme),
) -> Principal:
    """The caller of a control-plane route (``/api/...``): an API key or a user token;
    a worker token is Forbidden here (it is for its sandbox's worker routes)."""
    credential = _reader(conn, _CONTROL_MISSING, "api_key")
    return await authentication.principal(conn, core, API, credential, NEITHER, check=_no_worker_token)


async def worker_principal(
    conn: HTTPConnection,
    core: CoreDep,
    _bearer: object = Security(_bearer_scheme),
) -> Principal:
    """The caller of a worker-direct route (``/sandboxes/...`` without ``/api``)."""
    return await authentication.principal(conn, core, API, _reader(conn, _WORKER_MISSING, "token"), NEITHER)


@dataclass(frozen=True)
class Surface:
    """One of the two mounts of this API: which routes it has and who may call them."""

    name: str
    control: bool
    principal: Callable[..., Awaitable[Principal]]


CONTROL = Surface("control plane", True, control_principal)
WORKER = Surface("worker", False, worker_principal)
