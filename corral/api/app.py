"""The ASGI application: ``create_app(settings, **overrides)`` wires everything.

Nothing happens at import time. The app's lifespan opens the ``Core`` (store,
migrations, first key, reconcile, idle reaper) and closes it on shutdown; sandboxes
keep running across restarts. When the store had no key and none was configured, the
generated admin key is printed once to stderr (it is also saved, mode 0600, at
``<data dir>/admin-key``).

Mounted: the OpenComputer control plane at ``/api``, its worker-direct routes at the
root, the Enclave surface at ``/sessions`` (spec 001, its own envelope), the agent-runs
surface at ``/api/sessions`` and ``/api/sandbox`` (spec 004, its own envelope, included
before ``/api``), the MCP server
at ``/mcp`` (Streamable HTTP, ``corral.api.mcp``), the web console at ``/console``
(``corral.api.console``: a page and its modules, a client of these routes), the Copass compute
surface at ``/api/v1/storage/sandboxes`` (mounted first), the xgen surface at ``/api/v1`` (a sub-application with its own error envelope
and OpenAPI at ``/api/v1/openapi.json``), ``GET /healthz`` and ``GET /metrics`` (no
auth), OpenAPI at ``/openapi.json`` and ``/docs``. Middleware: ``RequestMetrics``
(``corral.api.telemetry``), ``RateLimitHeaders`` (``corral.api.guard``) and
``JsonBodies`` (``corral.api.bodies``: a body is JSON whatever type it declares). Each app
has its own metrics registry.

In front of all of it sits the gateway (``corral.gateway``): ``CorralApp.__call__``
hands every request the gateway claims (preview hosts ``{port}-{id}.<domain>`` and
``{id}-p{port}.<domain>``, paths under ``/preview/``) to it before FastAPI's routing
and middleware see it, so proxied traffic pays for none of them. The gateway is built
in the lifespan, after the core, over the services it uses (``gateway_services``; its
key cache hears ``hub.key_revoked``), and its connection pool is closed before the core.
Then the E2B surface (``corral.api.e2b``): requests it claims (``e2b.app.claims``: its
control plane at ``/sandboxes`` and ``/v2/sandboxes`` with ``X-API-Key``, and sandbox
traffic with ``E2b-Sandbox-Id``) go to it, also before FastAPI; its traffic to ports
other than envd's goes back through the gateway (``CorralApp.relay``).

``uvicorn --factory corral.api.app:main`` serves it with settings from ``CORRAL_*``
variables; ``corral.api.server.serve`` does the same with the right uvicorn options,
among them the protocol every connection is read with (``corral.api.front``: request
bounds, and the gateway's fast path, which answers plain keep-alive gateway requests before
they become ASGI calls; without it every gateway request comes here, slower).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import Request
from starlette.routing import Route

from corral.api.bodies import JsonBodies
from corral.api.console.routes import router as console_router
from corral.api.copass.app import MOUNT as COPASS_MOUNT
from corral.api.copass.app import create_surface as copass_surface
from corral.api.e2b.app import E2bSurface
from corral.api.e2b.app import claims as e2b_claims
from corral.api.enclave.routes import router as enclave_router
from corral.api.guard import RateLimitHeaders
from corral.api.mcp.endpoint import PATH as MCP_PATH
from corral.api.mcp.endpoint import McpEndpoint
from corral.api.opencomputer import errors
from corral.api.opencomputer.auth import CONTROL, WORKER
from corral.api.opencomputer.routes import router as opencomputer_router
from corral.api.runs.routes import sandbox as runs_sandbox_router
from corral.api.runs.routes import sessions as runs_router
from corral.api.telemetry import RequestMetrics, metrics_endpoint
from corral.api.xgen.app import create_surface as xgen_surface
from corral.core import Core
from corral.errors import CorralError
from corral.gateway.dispatch import Gateway
from corral.gateway.routing import Target
from corral.gateway.services import GatewayServices
from corral.metrics import Metrics
from corral.settings import Settings

OVERRIDES = frozenset({"runtime", "templates", "reconcile"})
HEALTH_TIMEOUT_S = 5.0


class HealthOut(BaseModel):
    status: str  # "ok" | "degraded"
    runtime: dict[str, Any]
    version: str
    # spec 001's health: the server is live, which backend (runtime) is wired, whether it answers
    ok: bool = True
    backend: str
    backendHealthy: bool


@functools.cache
def corral_version() -> str:
    """The installed package's version (read once: reading it parses its metadata)."""
    try:
        return version("corral")
    except PackageNotFoundError:
        return "0+unknown"


class CorralApp(FastAPI):
    """FastAPI with the gateway, then the E2B surface, in front (see the module docstring)."""

    gateway: Gateway | None = None
    e2b: E2bSurface | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        gateway = self.gateway
        if gateway is not None and scope["type"] != "lifespan":
            found = gateway.match(scope)
            if found is not None:
                await gateway.serve(found, scope, receive, send)
                return
            if self.e2b is not None and e2b_claims(scope):
                await self.e2b(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def relay(self, sandbox_id: str, port: int, scope: Any, receive: Any, send: Any) -> None:
        """The gateway's answer for ``port`` of ``sandbox_id`` (the E2B surface's other ports)."""
        gateway = self.gateway
        if gateway is None:
            raise RuntimeError("the gateway is not open")
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        host = next((v.decode("latin-1") for n, v in scope["headers"] if n == b"host"), "")
        target = Target(sandbox_id, port, path + b"?" + query if query else path, "", host)
        await gateway.serve(target, scope, receive, send)


def create_app(settings: Settings, **overrides: Any) -> FastAPI:
    """Build the app. ``overrides`` go to ``Core.open``: ``runtime=``, ``templates=``
    (adapters to use instead of the settings' defaults) and ``reconcile=`` (False to skip
    reconciling the node with the store at start-up)."""
    unknown = set(overrides) - OVERRIDES
    if unknown:
        raise TypeError(f"create_app got unknown overrides: {', '.join(sorted(unknown))}")
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core = await Core.open(settings, metrics=metrics, **overrides)
        app.state.core = core
        gateway = Gateway(gateway_services(core))
        core.hub.key_revoked.subscribe(gateway.access.forget_key)
        app.state.gateway = gateway
        if isinstance(app, CorralApp):
            app.gateway = gateway
            app.e2b = E2bSurface(app.state, corral_version(), app.relay)  # sandbox traffic and control plane
        if core.bootstrap_key and settings.api_key is None:
            saved = settings.data_dir / "admin-key"
            print(
                f"admin key: {core.bootstrap_key}\n  (shown once; saved at {saved})",
                file=sys.stderr,
                flush=True,
            )
        try:
            async with mcp.running():
                yield
        finally:
            if isinstance(app, CorralApp):
                app.gateway = None
                if app.e2b is not None:
                    app.e2b.close()
                app.e2b = None
            gateway.close()
            await core.close()

    app = CorralApp(
        title="corral",
        version=corral_version(),
        summary="Self-hostable sandboxes. OpenComputer API at /api (control plane) and / (worker).",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        strict_content_type=False,  # clients authenticate by header, so no CSRF to fear
    )
    errors.install(app)
    app.state.metrics = metrics
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(JsonBodies)
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"], response_model=HealthOut)
    app.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.mount(COPASS_MOUNT, copass_surface(app.state, corral_version()))  # before /api/v1: not shadowed
    app.mount("/api/v1", xgen_surface(app.state, corral_version()))
    mcp = McpEndpoint(app, corral_version())  # its tools call this app with the caller's credential
    app.router.routes.append(Route(MCP_PATH, mcp, include_in_schema=False))  # an ASGI app: every method
    app.include_router(console_router())  # /console: the web console, a client of the routes here
    app.include_router(enclave_router)  # /sessions, in its own envelope (api/enclave/errors.py)
    app.include_router(runs_router)  # /api/sessions (spec 004), before /api: its own envelope
    app.include_router(runs_sandbox_router)  # /api/sandbox/extend
    app.include_router(opencomputer_router(CONTROL), prefix="/api")
    app.include_router(opencomputer_router(WORKER))
    return app


def gateway_services(core: Core) -> GatewayServices:
    """What the gateway uses of ``core``."""
    return GatewayServices(
        settings=core.settings,
        metrics=core.metrics,
        auth=core.auth,
        kill_switch=core.kill_switch,
        previews=core.previews,
        sandboxes=core.sandboxes,
        hibernator=core.lifecycle.hibernator,
    )


async def healthz(request: Request) -> JSONResponse:
    """Which runtime is wired and whether it answers: 200 ``ok`` or 503 ``degraded``."""
    core: Core = request.app.state.core
    try:
        info = dict(await asyncio.wait_for(core.runtime.health(), HEALTH_TIMEOUT_S))
        ok = info.get("ok", True) is not False
    except (CorralError, TimeoutError, OSError) as exc:
        info = {"name": core.runtime.name, "error": getattr(exc, "message", None) or repr(exc)}
        ok = False
    info.setdefault("name", core.runtime.name)
    body = HealthOut(
        status="ok" if ok else "degraded",
        runtime=info,
        version=corral_version(),
        backend=core.runtime.name,
        backendHealthy=ok,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def main() -> FastAPI:
    """Factory for ``uvicorn --factory corral.api.app:main``: settings from the environment."""
    return create_app(Settings())  # type: ignore[call-arg]  # fields come from the environment
