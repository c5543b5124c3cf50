"""The E2B surface as the application sees it: ``E2bSurface.claims`` tells whether a
request is the surface's, calling it answers it.

Two kinds of requests are its, both at the server's root (E2B_API_URL and
E2B_SANDBOX_URL are corral's own URL):

- sandbox traffic: any request with an ``E2b-Sandbox-Id`` header, or with
  ``X-Access-Token`` to one of envd's paths (SDK 2.20's ``Sandbox.connect`` sends
  no ``E2b-Sandbox-Id``: the token names the sandbox). Port 49983
  (``E2b-Sandbox-Port``, the default) is corral's envd (``envd.Envd``); any other port
  goes through the gateway (``relay``, given by ``corral.api.app``: the gateway's own
  access check, forwarding, WebSockets and errors) with ``X-Access-Token`` (or
  ``E2B-Traffic-Access-Token``, the same token) sent as ``Authorization: Bearer`` (the
  envd access token is a worker token of the sandbox, which the gateway admits to any
  port of it);
- the control plane (``routes``, a sub-application with the E2B error envelope): its
  paths (``_CONTROL``: ``/v2/sandboxes...``, ``/sandboxes``, ``/sandboxes/{id}`` and
  its E2B actions) carrying ``X-API-Key`` and no ``Authorization``, whatever else they
  carry (older SDKs send ``E2b-Sandbox-Id`` on ``connect`` too). OpenComputer's worker
  routes at the root share two of them, ``GET /sandboxes/{id}`` and ``POST
  /sandboxes/{id}/timeout``: with ``Authorization: Bearer`` (the worker token those
  routes are for, or that token as ``X-API-Key``, as OpenComputer's SDK sends it) they
  are OpenComputer's, with an API key ``ek_...`` in ``X-API-Key`` alone E2B's; every
  other worker route is OpenComputer's whatever credential it carries.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from corral.api.e2b import errors
from corral.api.e2b.caller import ACCESS_TOKEN, ENVD_PORT, SANDBOX_ID, SANDBOX_PORT, Callers
from corral.api.e2b.envd import Envd
from corral.api.e2b.routes import router
from corral.api.guard import RateLimitHeaders
from corral.api.telemetry import RequestMetrics
from corral.core import Core
from corral.errors import InvalidInput

Relay = Callable[[str, int, Scope, Receive, Send], Awaitable[None]]
"""``relay(sandbox_id, port, scope, receive, send)``: the gateway's answer for that port."""

_SANDBOX_ID = SANDBOX_ID.encode()
_SANDBOX_PORT = SANDBOX_PORT.encode()
_ACCESS_TOKEN = ACCESS_TOKEN.encode()
_TRAFFIC_TOKEN = b"e2b-traffic-access-token"  # the same token, e2b_code_interpreter's header
_CONTROL = re.compile(
    r"^/(?:v2/sandboxes(?:/.*)?|sandboxes(?:/[^/]+(?:/(?:timeout|connect|pause|resume|refreshes|metrics|logs))?)?)$",
    re.DOTALL,
)
"""The control plane's paths: OpenComputer's worker routes at the root share only
``GET /sandboxes/{id}`` and ``POST /sandboxes/{id}/timeout``."""
_ENVD = ("/process.Process/", "/filesystem.Filesystem/", "/files", "/envs")  # envd's own paths


def claims(scope: Scope) -> bool:
    """Whether a request is the E2B surface's (see the module docstring)."""
    return scope["type"] in ("http", "websocket") and _kind(scope) is not None


def _kind(scope: Scope) -> str | None:
    """ "control", "traffic" or None (not the surface's). A control-plane request is told
    first: some SDK versions (2.20) send the sandbox's headers on ``connect`` too."""
    sandbox = key = authorization = token = False
    for name, value in scope["headers"]:
        sandbox = sandbox or name == _SANDBOX_ID
        key = key or (name == b"x-api-key" and value.startswith(b"ek_"))  # an API key, not a token
        authorization = authorization or name == b"authorization"
        token = token or name == _ACCESS_TOKEN
    path: str = scope["path"]
    if key and not authorization and scope["type"] == "http" and _CONTROL.match(path):
        return "control"
    if sandbox or (token and path.startswith(_ENVD)):
        return "traffic"
    return None


class E2bSurface:
    def __init__(self, state: State, version: str, relay: Relay) -> None:
        self.state = state
        self.relay = relay
        self.control = FastAPI(
            title="corral: E2B",
            version=version,
            summary="The E2B control plane the e2b SDK calls (E2B_API_URL = corral's URL).",
            openapi_url=None,
            docs_url=None,
            redoc_url=None,
        )
        self.control.state = state
        errors.install(self.control)
        self.control.add_middleware(RateLimitHeaders)  # X-RateLimit-* of guard.admit's verdict
        self.control.add_middleware(RequestMetrics, metrics=state.metrics)  # counted by route
        self.control.include_router(router)
        self._envd: Envd | None = None

    def envd(self) -> Envd:
        """The envd application, made on first use (the core exists from the lifespan on)."""
        if self._envd is None:
            core: Core = self.state.core
            self._envd = Envd(Callers(core))
        return self._envd

    def close(self) -> None:
        if self._envd is not None:
            self._envd.close()
            self._envd = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id = port = token = traffic = b""
        for name, value in scope["headers"]:
            if name == _SANDBOX_ID:
                sandbox_id = value
            elif name == _SANDBOX_PORT:
                port = value
            elif name == _ACCESS_TOKEN:
                token = value
            elif name == _TRAFFIC_TOKEN:
                traffic = value
        token = token or traffic
        if _kind(scope) == "control":
            await self.control(scope, receive, send)
            return
        number = int(port) if port.isdigit() and len(port) <= 5 else (ENVD_PORT if not port else 0)
        if number == ENVD_PORT and scope["type"] == "http":
            await self.envd()(scope, receive, send)
        elif 1 <= number <= 65535:
            await self.relay(sandbox_id.decode("latin-1"), number, _bearer(scope, token), receive, send)
        elif scope["type"] == "http":
            bad = InvalidInput("E2b-Sandbox-Port must be a port number", field="E2b-Sandbox-Port")
            await errors.answer(bad)(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})


def _bearer(scope: Scope, token: bytes) -> Scope:
    """``scope`` with ``X-Access-Token`` sent as ``Authorization: Bearer`` (no E2B headers)."""
    if not token:
        return scope
    drop = {_ACCESS_TOKEN, _TRAFFIC_TOKEN, b"authorization", _SANDBOX_ID, _SANDBOX_PORT}
    headers = [(n, v) for n, v in scope["headers"] if n not in drop]
    return {**scope, "headers": [*headers, (b"authorization", b"Bearer " + token)]}
