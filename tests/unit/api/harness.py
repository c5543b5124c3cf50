"""An app in-process for one test module: its own settings, store and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI

from corral.core import Core
from corral.errors import NotFound
from corral.ids import new_id
from tests.support.app import KEY, kill_all, make_app, make_settings


@asynccontextmanager
async def serving(data_dir: Any, **settings: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app (lifespan run) and a client with the owner key ``KEY``."""
    app = make_app(make_settings(data_dir, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers={"X-API-Key": KEY}
        ) as client:
            try:
                yield app, client
            finally:
                await kill_all(app.state.core)


async def new_key(app: FastAPI, role: str, org_name: str = "default") -> str:
    """A new API key of ``org_name`` (created if missing) with ``role``."""
    core: Core = app.state.core
    try:
        org = await core.auth.keys.org_by_name(org_name)
    except NotFound:
        org = await core.auth.keys.add_org(new_id("org"), org_name)
    return (await core.auth.create_key(org.id, role)).raw
