"""corral's real app over the process runtime (the real agent as a local process, no
isolation), for tests: its settings, the app, and the app served by uvicorn in a thread
with the options ``corral serve`` uses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from corral.api.app import create_app
from corral.api.server import config
from corral.core import Core
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.settings import Settings
from tests.support.server_thread import served as served_in_thread

KEY = "ek_apitest01_" + "k" * 32


def make_settings(data_dir: Path, port: int = 8080, **extra: Any) -> Settings:
    """Settings with the owner key ``KEY``, the process runtime and no reaper pass during
    a test; ``port`` is the one URLs name (the socket's, when served)."""
    return Settings(
        data_dir=data_dir, api_key=KEY, runtime="process", port=port, reaper_interval_s=3600, **extra
    )


def make_app(settings: Settings) -> FastAPI:
    runtime = ProcessRuntime(settings.data_dir / "process-sandboxes")
    return create_app(settings, runtime=runtime, templates=StaticTemplates())


@contextmanager
def served(settings: Settings, app: FastAPI, sock: socket.socket, name: str) -> Iterator[str]:
    """``app`` under uvicorn, with the options ``corral serve`` uses, in a thread on
    ``sock`` (bound and listening; ``settings.port`` should be its port); yields its URL,
    then stops it."""
    with served_in_thread(config(settings, app, log_level="warning"), sock, name) as url:
        yield url


def remove_sandboxes(url: str, key: str) -> None:
    """Delete every sandbox ``key`` sees (so no agent process is left running)."""
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=30) as client:
        for sb in client.get("/api/sandboxes").json():
            client.delete(f"/api/sandboxes/{sb['sandboxID']}")


async def kill_all(core: Core) -> None:
    """Destroys every live sandbox of ``core``'s store."""
    for sb in await core.sandboxes.store.list_all(live_only=True):
        await core.runtime.destroy(sb.id)
