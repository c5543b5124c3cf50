"""The xgen surface (``/api/v1``, spec 002) tested through a real ``corral serve`` on
runc with the protocol's client (``tests/support/xgen_client.py``): the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-xgen``, kept between runs so the ``base`` template is built once),
runc root, bridge, address pool, NFLOG group and store. Its JWT secret is the test's,
so tests can sign tokens (expired, forged). Two orgs, ``alpha`` and ``beta``, each with
an owner key; ``Org.key_of(role)`` mints more.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.template import build_template
from tests.support.xgen_client import XgenClient

DATA_DIR = Path(os.environ.get("CORRAL_XGEN_DATA_DIR", "/var/tmp/corral-xgen"))
RUN_DIR = "/run/corral-xgen"
pytestmark = pytest.mark.integration


@dataclass
class Org:
    name: str
    key: str
    server: Server
    keys: dict[str, str] = field(default_factory=dict)

    def key_of(self, role: str) -> str:
        """An API key of this org with ``role`` (made once per role)."""
        if role not in self.keys:
            out = self.server.cli("keys", "create", "--role", role, "--org", self.name)
            self.keys[role] = out.splitlines()[-1].strip()
        return self.keys[role]

    def client(self, role: str = "owner") -> XgenClient:
        return XgenClient(self.server.url, self.key_of(role))


@dataclass
class Server:
    url: str
    data_dir: Path
    database_url: str
    log: Path
    env: dict[str, str]
    jwt_secret: str
    pid: int = 0
    orgs: dict[str, Org] = field(default_factory=dict)

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def cli(self, *args: str) -> str:
        return surface.cli(self.env, self.data_dir, self.database_url, *args)

    def resigned(self, token: str, *, expires_in: int = 600, secret: str | None = None) -> str:
        """``token``'s claims signed again: expiring ``expires_in`` seconds from now
        (negative: already expired), with the server's secret or ``secret``."""
        return surface.resigned(token, secret or self.jwt_secret, expires_in)


@pytest.fixture(scope="session")
def xgen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp("xgen-server")
    seed = f"ek_xg{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    secret = secrets.token_hex(32)
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": "corralxg0",
        "CORRAL_NETWORK_POOL": "10.216.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "216",
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": seed,
        "CORRAL_JWT_SECRET": secret,
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_REAPER_INTERVAL_S": "0.5",  # lifetimes end within half a second of their deadline
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    build_template("base", env, work / "template-build.log", DATA_DIR)
    log = work / "server.log"
    with surface.served(DATA_DIR, database_url, env, log) as (proc, url):
        server = Server(url, DATA_DIR, database_url, log, env, secret, proc.pid)
        for name in surface.ORGS:
            server.cli("org", "create", name)
            org = Org(name, "", server)
            org.key = org.key_of("owner")
            server.orgs[name] = org
        yield server


@pytest.fixture(scope="session")
def alpha(xgen: Server) -> Org:
    return xgen.orgs["alpha"]


@pytest.fixture(scope="session")
def beta(xgen: Server) -> Org:
    return xgen.orgs["beta"]


@pytest.fixture
async def client(alpha: Org) -> AsyncIterator[XgenClient]:
    async with alpha.client() as c:
        yield c


@pytest.fixture
async def sandbox(client: XgenClient) -> AsyncIterator[str]:
    """A running base sandbox of alpha, deleted afterwards."""
    created = await client.create("base")
    try:
        yield created["id"]
    finally:
        await client.delete(created["id"])
