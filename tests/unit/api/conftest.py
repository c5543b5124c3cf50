"""Fixtures of the API tests: the real app over the process runtime (the real agent as
a local process, no isolation) and a temp data dir.

``api`` drives the app in-process (httpx over ASGI, lifespan run by hand); ``live``
serves it with uvicorn on a socket it bound, for WebSockets and the real SDKs
(the shared pieces are in ``tests/support/app.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from corral.core import Core
from corral.settings import Settings
from tests.support.app import KEY, kill_all, make_app, make_settings, remove_sandboxes, served
from tests.support.sockets import listening, port_of


@dataclass
class Api:
    """The app in-process: ``client`` has the owner key; ``sandbox`` is a running one."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    sandbox: dict[str, Any]

    @property
    def core(self) -> Core:
        core: Core = self.app.state.core
        return core

    @property
    def sid(self) -> str:
        return str(self.sandbox["sandboxID"])

    @property
    def token(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.sandbox['token']}"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def api(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Api]:
    settings = make_settings(tmp_path_factory.mktemp("api"))
    app = make_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers={"X-API-Key": KEY}
        ) as client:
            created = await client.post("/api/sandboxes", json={})
            assert created.status_code == 201, created.text
            yield Api(app, client, settings, created.json())
            await kill_all(app.state.core)


@dataclass
class Live:
    url: str
    ws_url: str
    app: FastAPI


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    sock = listening()
    settings = make_settings(tmp_path_factory.mktemp("live"), port=port_of(sock))
    app = make_app(settings)
    with served(settings, app, sock, "corral-live") as url:
        yield Live(url, f"ws://127.0.0.1:{port_of(sock)}", app)
        remove_sandboxes(url, KEY)
