"""OpenComputer agent sessions (issue 14, item 2) through a real ``corral serve`` on
runc, driven with both OpenComputer SDKs: the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-agents``, ``CORRAL_AGENTS_DATA_DIR``, kept between runs so the
``agent`` template, 1 GB with the Claude Code CLI, is built once per machine), runc
root, bridge, address pool and NFLOG group. Its model API is ``fake``, the fake
Messages API on loopback (tests/support/fake_anthropic.py) that only ``KEY`` opens:
each test gives it the turns it needs (``script``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opencomputer import Sandbox

from tests.support import surface
from tests.support.fake_anthropic import FakeMessagesApi, Turn, with_tools
from tests.support.host_network import owned_network
from tests.support.template import build_template

DATA_DIR = Path(os.environ.get("CORRAL_AGENTS_DATA_DIR", "/var/tmp/corral-agents"))
RUN_DIR = "/run/corral-agents"
KEY = "sk-ant-agents-" + secrets.token_hex(16)  # what corral holds; no sandbox may see it
pytestmark = pytest.mark.integration


@dataclass
class Server:
    url: str
    key: str
    log: Path
    env: dict[str, str]
    fake: FakeMessagesApi

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.url}/api", headers={"X-API-Key": self.key}, timeout=60)

    def script(self, *turns: Turn) -> FakeMessagesApi:
        """The fake model, emptied, answering ``turns`` next."""
        with self.fake.arrived:
            self.fake.received.clear()
            self.fake.script[:] = list(turns)
        return self.fake


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeMessagesApi]:
    server = FakeMessagesApi(key=KEY, takes=with_tools).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def agents(tmp_path_factory: pytest.TempPathFactory, fake: FakeMessagesApi) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp("agents-server")
    seed = f"ek_ag{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": "corralag0",
        "CORRAL_NETWORK_POOL": "10.227.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "227",
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": seed,
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_DEFAULT_TEMPLATE": "agent",
        "CORRAL_ANTHROPIC_API_KEY": KEY,
        "CORRAL_ANTHROPIC_BASE_URL": fake.url,
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    with owned_network(env):
        build_template("agent", env, work / "template-build.log", DATA_DIR)
        with surface.served(DATA_DIR, database_url, env, log) as (_proc, url):
            yield Server(url, seed, log, env, fake)


@pytest.fixture
async def sandbox(agents: Server) -> AsyncIterator[Sandbox]:
    """A running sandbox of the agent template (Python SDK), killed at the end."""
    sb = await Sandbox.create(template="agent", timeout=600, api_url=agents.url, api_key=agents.key)
    try:
        yield sb
    finally:
        try:
            await sb.kill()
        except httpx.HTTPError:
            pass
        await sb.close()
