"""The real server, started once per test session for the end-to-end tests.

It runs ``corral serve`` as a subprocess with the runc runtime on a free local port.
Its data dir (``CORRAL_E2E_DATA_DIR``, default ``/var/tmp/corral-e2e``) is kept
between runs so the ``base`` template is built only once (``corral template build
base`` runs before the server starts; it is a no-op when built); the store is new for
every session, seeded with a random key, and a runc root of its own keeps it apart
from any other corral on this machine. Sandboxes left at the end are removed.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opencomputer import Sandbox

CORRAL = str(Path(sys.executable).parent / "corral")
DATA_DIR = Path(os.environ.get("CORRAL_E2E_DATA_DIR", "/var/tmp/corral-e2e"))
RUNC_ROOT = "/run/corral-e2e/runc"
BUILD_TIMEOUT_S = 900
START_TIMEOUT_S = 90


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _build_base(env: dict[str, str], log: Path, data_dir: Path = DATA_DIR) -> None:
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [CORRAL, "template", "build", "base", "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    sys.stderr.write(f"\ne2e: base template ready in {time.monotonic() - started:.1f}s\n")
    if proc.returncode != 0:
        pytest.fail(f"corral template build base failed ({proc.returncode}):\n{_tail(log)}", pytrace=False)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"corral serve exited with {proc.returncode}:\n{_tail(log)}", pytrace=False)
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"corral serve was not healthy in {START_TIMEOUT_S}s:\n{_tail(log)}", pytrace=False)


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
    port = _free_port()
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
    _build_base(env, work / "template-build.log")

    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                CORRAL,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(DATA_DIR),
                "--database-url",
                database_url,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    info = Server(url=url, key=key, data_dir=DATA_DIR, database_url=database_url, log=log)
    try:
        _wait_healthy(url, proc, log)
        yield info
        _remove_leftovers(info)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
