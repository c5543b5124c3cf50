"""The E2B surface driven by the real ``e2b`` SDK through a real ``corral serve`` on
runc: the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-e2b``, kept between runs so its templates are built once), runc
root, bridge, address pool, NFLOG group and store. Two orgs, ``alpha`` and ``beta``,
each with an owner key; ``Org.key_of(role)`` mints more. ``e2b_env`` points the SDK at
it the way a user does: ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` the server's URL,
``E2B_API_KEY`` alpha's owner key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.template import build_template

DATA_DIR = Path(os.environ.get("CORRAL_E2B_DATA_DIR", "/var/tmp/corral-e2b"))
# a second copy of the suite at once (a developer's run beside CI's) takes another slot
SLOT = int(os.environ.get("CORRAL_E2B_SLOT", "0"))
RUN_DIR = f"/run/corral-e2b{SLOT or ''}"
TEMPLATES = ("base",)  # built into DATA_DIR before the server starts
pytestmark = pytest.mark.integration


@dataclass
class Org:
    name: str
    key: str
    server: Server
    keys: dict[str, str] = field(default_factory=dict)

    def key_of(self, role: str) -> str:
        """An API key of this org with ``role``, made once."""
        if role not in self.keys:
            out = self.server.cli("keys", "create", "--role", role, "--org", self.name)
            self.keys[role] = out.splitlines()[-1].strip()
        return self.keys[role]


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
def e2b_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp("e2b-server")
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": f"corrale2b{SLOT}",
        "CORRAL_NETWORK_POOL": f"10.{233 + SLOT}.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": str(233 + SLOT),
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": f"ek_e2b{secrets.token_hex(6)}_{secrets.token_hex(24)}",
        "CORRAL_STANDBY_SANDBOXES": "0",
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATES:
        build_template(name, env, work / f"template-{name}.log", DATA_DIR)
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
def interpreter_template(e2b_server: Server, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The ``code-interpreter`` template, built into DATA_DIR (once per machine) for the
    tests that use it, while the server runs."""
    log = tmp_path_factory.mktemp("code-interpreter") / "build.log"
    build_template("code-interpreter", e2b_server.env, log, e2b_server.data_dir)


@pytest.fixture(scope="session")
def alpha(e2b_server: Server) -> Org:
    return e2b_server.orgs["alpha"]


@pytest.fixture(scope="session")
def beta(e2b_server: Server) -> Org:
    return e2b_server.orgs["beta"]


@pytest.fixture(scope="session")
def e2b_env(e2b_server: Server, alpha: Org) -> Iterator[Server]:
    """The SDK's environment, as a user sets it: every call goes to this server, as
    alpha (restored after the session's E2B tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("E2B_API_URL", e2b_server.url)
        patch.setenv("E2B_SANDBOX_URL", e2b_server.url)
        patch.setenv("E2B_API_KEY", alpha.key)
        yield e2b_server
