"""The ASGI application: ``create_app(settings, **overrides)`` wires everything.

Nothing happens at import time. The app's lifespan opens the ``Core`` (store,
migrations, first key, reconcile, idle reaper) and closes it on shutdown; sandboxes
keep running across restarts. When the store had no key and none was configured, the
generated admin key is printed once to stderr (it is also saved, mode 0600, at
``<data dir>/admin-key``).

Mounted: the OpenComputer control plane at ``/api``, its worker-direct routes at the
root, ``GET /healthz`` (no auth), OpenAPI at ``/openapi.json`` and ``/docs``.

``uvicorn --factory corral.api.app:main`` serves it with settings from ``CORRAL_*``
variables; ``corral.api.server.serve`` does the same with the right uvicorn options.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import Request

from corral.api.opencomputer import errors
from corral.api.opencomputer.auth import CONTROL, WORKER
from corral.api.opencomputer.routes import router as opencomputer_router
from corral.errors import CorralError
from corral.services.core import Core
from corral.settings import Settings

OVERRIDES = frozenset({"runtime", "templates", "reconcile"})
HEALTH_TIMEOUT_S = 5.0


class HealthOut(BaseModel):
    status: str  # "ok" | "degraded"
    runtime: dict[str, Any]
    version: str


def corral_version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:
        return "0+unknown"


def create_app(settings: Settings, **overrides: Any) -> FastAPI:
    """Build the app. ``overrides`` go to ``Core.open``: ``runtime=``, ``templates=``
    (adapters to use instead of the settings' defaults) and ``reconcile=`` (False to skip
    reconciling the node with the store at start-up)."""
    unknown = set(overrides) - OVERRIDES
    if unknown:
        raise TypeError(f"create_app got unknown overrides: {', '.join(sorted(unknown))}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        core = await Core.open(settings, **overrides)
        app.state.core = core
        if core.bootstrap_key and settings.api_key is None:
            saved = settings.data_dir / "admin-key"
            print(
                f"admin key: {core.bootstrap_key}\n  (shown once; saved at {saved})",
                file=sys.stderr,
                flush=True,
            )
        try:
            yield
        finally:
            await core.close()

    app = FastAPI(
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
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"], response_model=HealthOut)
    app.include_router(opencomputer_router(CONTROL), prefix="/api")
    app.include_router(opencomputer_router(WORKER))
    return app


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
    body = HealthOut(status="ok" if ok else "degraded", runtime=info, version=corral_version())
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


def main() -> FastAPI:
    """Factory for ``uvicorn --factory corral.api.app:main``: settings from the environment."""
    return create_app(Settings())  # type: ignore[call-arg]  # fields come from the environment
