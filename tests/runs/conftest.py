"""The agent-runs surface (``/api/sessions``, spec 004) tested through a real ``corral
serve`` on runc, its model the fake Messages API (tests/support/fake_anthropic.py) on
loopback: the fixtures.

The server runs apart from the other test servers: its own data dir
(``/var/tmp/corral-runs``), runc root and store; no network namespaces (a desktop needs
none). Its ``templates`` dir is the end-to-end suite's (a symlink, as the crash tests
do), where the ``gui`` template is built once per machine, so this suite builds
nothing when it is there. ``Server.restart`` kills it (SIGKILL: nothing of its shutdown
runs) and starts it again on the same data dir and store.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support import process
from tests.support.fake_anthropic import FakeMessagesApi
from tests.support.template import build_template

E2E_DATA_DIR = Path(os.environ.get("CORRAL_E2E_DATA_DIR", "/var/tmp/corral-e2e"))
DATA_DIR = Path(os.environ.get("CORRAL_RUNS_DATA_DIR", "/var/tmp/corral-runs"))
RUN_DIR = "/run/corral-runs"
MODEL_KEY = "sk-ant-runs-" + secrets.token_hex(16)
pytestmark = pytest.mark.integration


@dataclass
class Server:
    url: str
    key: str
    env: dict[str, str]
    work: Path
    proc: subprocess.Popen[bytes] | None = None
    lives: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return self.logs[-1]

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}", **headers}, timeout=60
        )

    def opencomputer(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api", headers={"X-API-Key": self.key}, timeout=60)

    def start(self) -> None:
        log = self.work / f"server-{len(self.logs)}.log"
        self.logs.append(log)
        args = [
            "--data-dir",
            str(DATA_DIR),
            "--database-url",
            f"sqlite+aiosqlite:///{self.work / 'corral.db'}",
        ]
        proc, self.url = process.start(args, self.env, log)
        self.proc = proc
        process.wait_healthy(self.url, proc, log, 60)

    def restart(self) -> None:
        """SIGKILL (a crash), then a new life on the same data dir and store."""
        proc = self.proc
        assert proc is not None
        proc.kill()
        proc.wait()
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            process.stop(self.proc)


@pytest.fixture(scope="session")
def model() -> Iterator[FakeMessagesApi]:
    fake = FakeMessagesApi(key=MODEL_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def runs_server(tmp_path_factory: pytest.TempPathFactory, model: FakeMessagesApi) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp("runs-server")
    key = f"ek_runs{secrets.token_hex(5)}_{secrets.token_hex(24)}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_ENABLED": "false",
        "CORRAL_API_KEY": key,
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_ANTHROPIC_API_KEY": MODEL_KEY,
        "CORRAL_ANTHROPIC_BASE_URL": model.url,
        "CORRAL_RUNS_MAX_STEPS": "8",
        "CORRAL_REAPER_INTERVAL_S": "0.5",
        "CORRAL_RATE_LIMIT_RUNS": "0",  # the tests poll runs; the limit is tested in tests/unit/api/test_runs.py
    }
    E2E_DATA_DIR.mkdir(parents=True, exist_ok=True)
    build_template("gui", env, work / "template-build.log", E2E_DATA_DIR)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    templates = DATA_DIR / "templates"
    if not templates.is_symlink():
        shutil.rmtree(templates, ignore_errors=True)
        templates.symlink_to(E2E_DATA_DIR / "templates")
    server = Server("", key, env, work)
    server.start()
    try:
        yield server
        with server.opencomputer() as http:
            for sandbox in http.get("/sandboxes").json():
                http.delete(f"/sandboxes/{sandbox['sandboxID']}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def server_and_thread(runs_server: Server) -> tuple[Server, str]:
    """The server and a thread whose runs the tests take turns on (in file order)."""
    with runs_server.client() as http:
        created = http.post("/api/sessions", json={"prompt": "open a terminal and save the date"})
    assert created.status_code == 201, created.text
    return runs_server, str(created.json()["threadId"])
