"""Fixtures of the API tests: the real app over the process runtime (the real agent as
a local process, no isolation) and a temp data dir.

``api`` drives the app in-process (httpx over ASGI, lifespan run by hand); ``live``
serves it with uvicorn on a free local port, for WebSockets and the real SDKs.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import uvicorn
from fastapi import FastAPI

from corral.api.app import create_app
from corral.api.server import config
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.core import Core
from corral.settings import Settings

KEY = "ek_apitest01_" + "k" * 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(data_dir: Path, port: int = 8080, **extra: Any) -> Settings:
    return Settings(
        data_dir=data_dir, api_key=KEY, runtime="process", port=port, reaper_interval_s=3600, **extra
    )


def make_app(settings: Settings) -> FastAPI:
    runtime = ProcessRuntime(settings.data_dir / "process-sandboxes")
    return create_app(settings, runtime=runtime, templates=StaticTemplates())


@contextmanager
def served(settings: Settings, app: FastAPI, name: str) -> Iterator[str]:
    """``app`` under uvicorn, with the options ``corral serve`` uses, in a thread on the
    settings' port; yields its URL, then stops it."""
    server = uvicorn.Server(config(settings, app, log_level="warning"))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the corral server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(15)


def remove_sandboxes(url: str, key: str) -> None:
    """Delete every sandbox ``key`` sees (so no agent process is left running)."""
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        for sb in client.get("/api/sandboxes").json():
            client.delete(f"/api/sandboxes/{sb['sandboxID']}")


async def kill_all(core: Core) -> None:
    for sb in await core.sandboxes.store.list_all(live_only=True):
        await core.runtime.destroy(sb.id)


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
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("live"), port=port)
    app = make_app(settings)
    with served(settings, app, "corral-live") as url:
        yield Live(url, f"ws://127.0.0.1:{port}", app)
        remove_sandboxes(url, KEY)
