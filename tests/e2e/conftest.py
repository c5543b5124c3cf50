"""The real server, started once per test session for the end-to-end tests.

It runs ``corral serve`` as a subprocess with the runc runtime on a local socket it is
given (``tests/support/process.py``).
Its data dir (``CORRAL_E2E_DATA_DIR``, default ``/var/tmp/corral-e2e``) is kept
between runs so the ``base`` template is built only once (``corral template build
base`` runs before the server starts; it is a no-op when built); the store is new for
every session, seeded with a random key, and a runc root of its own keeps it apart
from any other corral on this machine. Sandboxes left at the end are removed.
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

from tests.support import process
from tests.support.host_network import owned_network
from tests.support.template import build_base

DATA_DIR = Path(os.environ.get("CORRAL_E2E_DATA_DIR", "/var/tmp/corral-e2e"))
RUNC_ROOT = "/run/corral-e2e/runc"


@dataclass(frozen=True)
class Server:
    url: str
    key: str
    data_dir: Path
    database_url: str
    log: Path

    def env(self) -> dict[str, str]:
        """Environment for a client process: the SDKs' and the CLI's variables."""
        return {
            **os.environ,
            "OPENCOMPUTER_API_URL": self.url,
            "OPENCOMPUTER_API_KEY": self.key,
            "CORRAL_URL": self.url,
            "CORRAL_API_KEY": self.key,
        }

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api", headers={"X-API-Key": self.key}, timeout=60)


def _remove_leftovers(server: Server) -> None:
    try:
        with server.http() as http:
            for sandbox in http.get("/sandboxes").json():
                http.delete(f"/sandboxes/{sandbox['sandboxID']}")
    except (httpx.HTTPError, ValueError, TypeError, KeyError):
        pass


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("e2e-server")
    key = f"ek_e2e{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": RUNC_ROOT,
        # a network of its own, apart from any other corral on this machine
        "CORRAL_NETWORK_BRIDGE": "corrale2e0",
        "CORRAL_NETWORK_POOL": "10.214.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "214",
        "CORRAL_NETWORK_STATE_DIR": "/run/corral-e2e/network",
        "CORRAL_API_KEY": key,
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with owned_network(env):
        build_base(env, work / "template-build.log", DATA_DIR)

        log = work / "server.log"
        args = ["--data-dir", str(DATA_DIR), "--database-url", database_url]
        proc, url = process.start(args, env, log)
        info = Server(url=url, key=key, data_dir=DATA_DIR, database_url=database_url, log=log)
        try:
            process.wait_healthy(url, proc, log)
            yield info
            _remove_leftovers(info)
        finally:
            process.stop(proc)


@pytest.fixture
async def sandbox(server: Server) -> AsyncIterator[Sandbox]:
    """A base sandbox through the Python SDK, killed at the end."""
    sb = await Sandbox.create(template="base", timeout=600, api_url=server.url, api_key=server.key)
    try:
        yield sb
    finally:
        try:
            await sb.kill()
        except httpx.HTTPError:
            pass
        await sb.close()
