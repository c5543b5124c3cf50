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
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import surface
from tests.support.host_network import owned_network
from tests.support.template import build_template

DATA_DIR = Path(os.environ.get("CORRAL_E2B_DATA_DIR", "/var/tmp/corral-e2b"))
# a second copy of the suite at once (a developer's run beside CI's) takes another slot
SLOT = int(os.environ.get("CORRAL_E2B_SLOT", "0"))
RUN_DIR = f"/run/corral-e2b{SLOT or ''}"
TEMPLATES = ("base",)  # built into DATA_DIR before the server starts
pytestmark = pytest.mark.integration


Org = surface.Org


Server = surface.Server[Org]


@pytest.fixture(scope="session")
def e2b_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work, database_url = surface.workplace(tmp_path_factory, "e2b")
    env = {
        **surface.runc_env(RUN_DIR, f"corrale2b{SLOT}", 233 + SLOT, "e2b"),
        "CORRAL_STANDBY_SANDBOXES": "0",
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    with owned_network(env):
        for name in TEMPLATES:
            build_template(name, env, work / f"template-{name}.log", DATA_DIR)
        with surface.served(DATA_DIR, database_url, env, log) as (_proc, url):
            server = Server(url, DATA_DIR, database_url, log, env)
            surface.seeded_orgs(server, Org)
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
