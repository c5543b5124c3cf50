"""The Enclave surface (``/sessions``, spec 001) tested through a real ``corral serve``
on runc, with real HTTP clients: the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-enclave``, kept between runs so the ``base`` and ``nodejs``
templates are built once), runc root, bridge, address pool, NFLOG group and store. Its
JWT secret is the test's, so tests can sign user tokens (valid, expired, forged). Two
orgs, ``alpha`` and ``beta``, each with an owner key; ``Org.key_of(role)`` mints more.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import surface
from tests.support.host_network import owned_network
from tests.support.template import build_template

DATA_DIR = Path(os.environ.get("CORRAL_ENCLAVE_DATA_DIR", "/var/tmp/corral-enclave"))
RUN_DIR = "/run/corral-enclave"
pytestmark = pytest.mark.integration


class Org(surface.Org):
    def http(self, credential: str | None = None) -> httpx.Client:
        """A client of the server's root with ``Authorization: Bearer`` (the owner key)."""
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {credential or self.key}"},
            timeout=httpx.Timeout(120, connect=10),
        )

    def run(self, body: dict[str, Any], credential: str | None = None) -> dict[str, Any]:
        """Create a session and follow its stream to the end; the session, its frames
        and its audit trail as ``{"session", "frames", "audit"}``."""
        with self.http(credential) as http:
            created = http.post("/sessions", json=body)
            assert created.status_code == 201, created.text
            session_id = created.json()["id"]
            frames = stream(http, session_id)
            session = http.get(f"/sessions/{session_id}").json()
            audit = http.get(f"/sessions/{session_id}/audit").json()["events"]
        return {"session": session, "frames": frames, "audit": audit}


@dataclass
class Server(surface.SigningServer[Org]):
    def token(self, key: str) -> str:
        """A user JWT for ``key``, from the server's token exchange (spec 002's)."""
        answer = httpx.post(f"{self.url}/api/v1/auth/token", json={"api_key": key}, timeout=30)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["token"])


def stream(http: httpx.Client, session_id: str) -> list[dict[str, Any]]:
    """Every frame of a session's stream, read to its end (the server closes it)."""
    frames: list[dict[str, Any]] = []
    with http.stream("GET", f"/sessions/{session_id}/stream") as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in answer.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert event == "message"
                frames.append(json.loads(line.removeprefix("data: ")))
    return frames


@pytest.fixture(scope="session")
def enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    with held(DATA_DIR):
        yield from _serve(tmp_path_factory)


@contextmanager
def held(data_dir: Path) -> Iterator[None]:
    """``data_dir`` for this test session alone: another one running these tests waits
    here for it (a data dir has one server at a time, and the templates are built there once)."""
    Path(RUN_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{RUN_DIR}-{data_dir.name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work, database_url = surface.workplace(tmp_path_factory, "enclave")
    secret = secrets.token_hex(32)
    env = {
        **surface.runc_env(RUN_DIR, "corralenc0", 213, "enc"),
        "CORRAL_JWT_SECRET": secret,
        # one base and one nodejs sandbox standing by: sessions with the default limits
        # take them, their egress policy applied then (services/standby.py)
        "CORRAL_STANDBY_SANDBOXES": "1",
        "CORRAL_WEBHOOK_ALLOW_PRIVATE": "true",  # the tests' receiver is on loopback
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    log = work / "server.log"
    with owned_network(env):
        for name in ("base", "nodejs"):
            build_template(name, env, work / "template-build.log", DATA_DIR)
        with surface.served(DATA_DIR, database_url, env, log) as (_proc, url):
            server = Server(url, DATA_DIR, database_url, log, env, secret)
            surface.seeded_orgs(server, Org)
            yield server


@pytest.fixture(scope="session")
def alpha(enclave: Server) -> Org:
    return enclave.orgs["alpha"]


@pytest.fixture(scope="session")
def beta(enclave: Server) -> Org:
    return enclave.orgs["beta"]
