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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.host_network import owned_network
from tests.support.template import build_base

DATA_DIR = Path(os.environ.get("CORRAL_COPASS_DATA_DIR", "/var/tmp/corral-copass"))
RUN_DIR = "/run/corral-copass"
CAP = 4
pytestmark = pytest.mark.integration


Org = surface.Org


Server = surface.Server[Org]


@pytest.fixture(scope="session")
def copass_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work, database_url = surface.workplace(tmp_path_factory, "copass")
    env = {
        **surface.runc_env(RUN_DIR, "corralcps0", 218, "cps"),
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_REAPER_INTERVAL_S": "0.2",
        "CORRAL_KILL_SWITCH_REFRESH_S": "0.2",
        "CORRAL_COMPUTE_SESSIONS_PER_USER": str(CAP),
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    with owned_network(env):
        build_base(env, work / "template-build.log", DATA_DIR)
        with surface.served(DATA_DIR, database_url, env, log) as (_proc, url):
            server = Server(url, DATA_DIR, database_url, log, env)
            surface.seeded_orgs(server, Org)
            yield server


@pytest.fixture(scope="session")
def alpha(copass_server: Server) -> Org:
    return copass_server.orgs["alpha"]


@pytest.fixture(scope="session")
def beta(copass_server: Server) -> Org:
    return copass_server.orgs["beta"]
