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
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.host_network import owned_network
from tests.support.procfs import status_field
from tests.support.template import build_template
from tests.support.xgen_client import XgenClient

DATA_DIR = Path(os.environ.get("CORRAL_XGEN_DATA_DIR", "/var/tmp/corral-xgen"))
RUN_DIR = "/run/corral-xgen"
pytestmark = pytest.mark.integration


class Org(surface.Org):
    server: Server  # this suite's (its tests sign tokens with its secret)

    def client(self, role: str = "owner") -> XgenClient:
        return XgenClient(self.server.url, self.key_of(role))


@dataclass
class Server(surface.SigningServer[Org]):
    pid: int = 0

    def rss(self) -> int:
        """The server's resident memory, in bytes."""
        return int(status_field(self.pid, "VmRSS")[0]) * 1024


@pytest.fixture(scope="session")
def xgen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work, database_url = surface.workplace(tmp_path_factory, "xgen")
    secret = secrets.token_hex(32)
    env = {
        **surface.runc_env(RUN_DIR, "corralxg0", 216, "xg"),
        "CORRAL_JWT_SECRET": secret,
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_REAPER_INTERVAL_S": "0.5",  # lifetimes end within half a second of their deadline
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    with owned_network(env):
        build_template("base", env, work / "template-build.log", DATA_DIR)
        with surface.served(DATA_DIR, database_url, env, log) as (proc, url):
            server = Server(url, DATA_DIR, database_url, log, env, secret, proc.pid)
            surface.seeded_orgs(server, Org)
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
