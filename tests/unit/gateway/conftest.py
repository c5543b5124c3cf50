"""Fixtures of the gateway tests: a real uvicorn server (in a thread, with the server
options corral uses) over the process runtime, two orgs, and one sandbox running
``sandbox_app.py`` (HTTP, SSE, WebSocket echo and misbehaving endpoints).

The sandbox is created with ``previewAuth`` so its preview token is known; the port of
its servers has a (non-public) preview URL. ``Gw.url(path)`` reaches it by host,
``Gw.path_url(path)`` by path.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from corral.core import Core
from corral.gateway.dispatch import Gateway
from corral.ids import new_id
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from tests.support.app import KEY, make_app, make_settings, remove_sandboxes, served
from tests.support.conditions import eventually_async
from tests.support.sockets import listening, port_of

APP_SCRIPT = Path(__file__).with_name("sandbox_app.py")
ALLOWED_ORIGIN = "http://allowed.example"
HEAD_TIMEOUT_S = 1.0


@dataclass
class Server:
    url: str
    port: int
    app: FastAPI
    other_key: str  # the owner key of a second org
    org_id: str  # the org of KEY

    @property
    def core(self) -> Core:
        core: Core = self.app.state.core
        return core


async def _second_org(settings: Any) -> tuple[str, str]:
    """Bootstraps the store (the owner key KEY) and adds a second org with its own key;
    returns that key and the org of KEY."""
    runtime = ProcessRuntime(settings.data_dir / "process-sandboxes")
    core = await Core.open(settings, runtime=runtime, templates=StaticTemplates(), reconcile=False)
    try:
        org = await core.auth.keys.add_org(new_id("org"), "other")
        other_key = (await core.auth.create_key(org.id, "owner")).raw
        return other_key, (await core.auth.keys.org_by_name("default")).id
    finally:
        await core.close()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sock = listening()
    port = port_of(sock)
    settings = make_settings(
        tmp_path_factory.mktemp("gateway"),
        port=port,
        gateway_cors_origins=[ALLOWED_ORIGIN],
        gateway_extra_domains=["preview.test"],
        gateway_head_timeout_s=HEAD_TIMEOUT_S,
        http_head_timeout_s=2.0,
        http_max_header_bytes=16 * 1024,
        http_keep_alive_s=3,
    )
    other_key, org_id = asyncio.run(_second_org(settings))
    app = make_app(settings)
    with served(settings, app, sock, "corral-gateway") as url:
        yield Server(url, port, app, other_key, org_id)
        remove_sandboxes(url, KEY)


@dataclass
class Gw:
    """The server, a sandbox running ``sandbox_app.py`` on ``port``, and its token."""

    server: Server
    api: httpx.AsyncClient  # owner key, control plane
    sid: str
    port: int
    preview_token: str

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.server.app.state.gateway
        return gateway

    def url(self, path: str = "/") -> str:
        """For host routing, with ``host_header``: the connection goes to 127.0.0.1 and
        the Host header names the sandbox (the system resolver may not know *.localhost)."""
        return f"{self.server.url}{path}"

    def host_header(self, port: int | None = None, form: str = "dash") -> dict[str, str]:
        p = port or self.port
        name = f"{p}-{self.sid}" if form == "dash" else f"{self.sid}-p{p}"
        return {"Host": f"{name}.localhost:{self.server.port}"}

    def path_url(self, path: str = "/", port: int | None = None) -> str:
        return f"{self.server.url}/preview/{self.sid}/{port or self.port}{path}"


async def start_app(api: httpx.AsyncClient, base: str, sid: str) -> int:
    """Write ``sandbox_app.py`` into the sandbox, run it on a port the kernel chooses
    (none is freed and taken again), wait until it answers, remove its files (the
    process runtime's sandboxes write to the host's /tmp); returns the port."""
    target = f"/tmp/corral-gateway-test-{sid}-{secrets.token_hex(4)}.py"
    port_file = f"{target}.port"
    put = await api.put(f"/sandboxes/{sid}/files", params={"path": target}, content=APP_SCRIPT.read_bytes())
    assert put.status_code == 204, put.text
    started = await api.post(
        f"/sandboxes/{sid}/exec",
        json={"cmd": sys.executable, "args": [target, "0", "127.0.0.1", port_file]},
    )
    assert started.status_code == 201, started.text
    port = 0

    async def listening() -> bool:
        nonlocal port
        read = await api.get(f"/sandboxes/{sid}/files", params={"path": port_file})
        port = int(read.text) if read.status_code == 200 else 0
        return port > 0

    await eventually_async(listening, 15, "the sandbox's server did not start")
    probe = await api.get(f"{base}/preview/{sid}/{port}/hello")
    assert probe.status_code == 200, probe.text
    for path in (target, port_file):
        removed = await api.delete(f"/sandboxes/{sid}/files", params={"path": path})
        assert removed.status_code == 204, removed.text
    return port


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gw(server: Server) -> AsyncIterator[Gw]:
    async with httpx.AsyncClient(base_url=f"{server.url}/api", headers={"X-API-Key": KEY}, timeout=30) as api:
        created = await api.post("/sandboxes", json={"previewAuth": {"token": "auto"}})
        assert created.status_code == 201, created.text
        sid, token = created.json()["sandboxID"], created.json()["previewAuthToken"]
        port = await start_app(api, server.url, sid)
        preview = await api.post(f"/sandboxes/{sid}/preview", json={"port": port})
        assert preview.status_code == 201, preview.text
        yield Gw(server, api, sid, port, token)
        await api.delete(f"/sandboxes/{sid}")


@pytest_asyncio.fixture(loop_scope="module")
async def client(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    """No credentials; never follows redirects."""
    async with httpx.AsyncClient(timeout=30) as c:
        yield c
