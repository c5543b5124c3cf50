"""The xgen surface as a sub-application, so it has its own error envelope.

``create_surface(state)`` shares the parent application's ``state`` (where the
lifespan puts ``core``), since a mounted application runs no lifespan of its own.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import State

from corral.api.xgen import errors
from corral.api.xgen.routes import router


def create_surface(state: State, version: str) -> FastAPI:
    surface = FastAPI(
        title="corral: xgen API",
        version=version,
        summary="The xgen sandbox API (spec 002), mounted at /api/v1.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    surface.state = state
    errors.install(surface)
    surface.include_router(router)
    return surface
