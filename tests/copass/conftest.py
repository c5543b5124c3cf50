"""The Copass compute surface and its gateway URLs, driven by the real copass-core
client through a real ``corral serve`` on runc: the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-copass``, kept between runs so the ``base`` template is built once),
runc root, bridge, address pool, NFLOG group and store. Its reaper passes every 0.2 s
(so a session's deadline shows within a fraction of a second), its kill switches are
read from the store every 0.2 s, and a user holds at most ``CAP`` sessions at once. Two
orgs, ``alpha`` and ``beta``, each with an owner key; ``Org.key_of(role)`` mints more.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.template import build_base

DATA_DIR = Path(os.environ.get("CORRAL_COPASS_DATA_DIR", "/var/tmp/corral-copass"))
RUN_DIR = "/run/corral-copass"
CAP = 4
pytestmark = pytest.mark.integration


@dataclass
class Org:
    name: str
    key: str
    server: Server
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def key_of(self, role: str, name: str = "") -> str:
        """An API key of this org with ``role``, made once per ``(role, name)`` (so a test
        may have a user of its own: the per-user cap counts per key)."""
        if (role, name) not in self.keys:
            out = self.server.cli("keys", "create", "--role", role, "--org", self.name)
            self.keys[(role, name)] = out.splitlines()[-1].strip()
        return self.keys[(role, name)]


@dataclass
class Server:
    url: str
    data_dir: Path
    database_url: str
    log: Path
    env: dict[str, str]
    orgs: dict[str, Org] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        return surface.cli(self.env, self.data_dir, self.database_url, *args)


@pytest.fixture(scope="session")
def copass_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp("copass-server")
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": "corralcps0",
        "CORRAL_NETWORK_POOL": "10.218.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "218",
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": f"ek_cps{secrets.token_hex(6)}_{secrets.token_hex(24)}",
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_REAPER_INTERVAL_S": "0.2",
        "CORRAL_KILL_SWITCH_REFRESH_S": "0.2",
        "CORRAL_COMPUTE_SESSIONS_PER_USER": str(CAP),
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    build_base(env, work / "template-build.log", DATA_DIR)
    log = work / "server.log"
    with surface.served(DATA_DIR, database_url, env, log) as (_proc, url):
        server = Server(url, DATA_DIR, database_url, log, env)
        for name in surface.ORGS:
            server.cli("org", "create", name)
            org = Org(name, "", server)
            org.key = org.key_of("owner")
            server.orgs[name] = org
        yield server


@pytest.fixture(scope="session")
def alpha(copass_server: Server) -> Org:
    return copass_server.orgs["alpha"]


@pytest.fixture(scope="session")
def beta(copass_server: Server) -> Org:
    return copass_server.orgs["beta"]
