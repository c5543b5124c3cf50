"""The Copass compute surface as a sub-application, so it has its own error envelope.

``create_surface(state, version)`` shares the parent application's ``state`` (where
the lifespan puts ``core``), since a mounted application runs no lifespan of its own.
``api/app.py`` mounts it at ``/api/v1/storage/sandboxes``, before the xgen surface's
``/api/v1``, so neither shadows the other (xgen has no ``/storage`` routes).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import State

from corral.api.copass import errors
from corral.api.copass.routes import router

MOUNT = "/api/v1/storage/sandboxes"


def create_surface(state: State, version: str) -> FastAPI:
    surface = FastAPI(
        title="corral: Copass compute",
        version=version,
        summary=f"The Copass compute routes copass-core calls, mounted at {MOUNT}.",
        openapi_url="/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    surface.state = state
    errors.install(surface)
    surface.include_router(router)
    return surface
