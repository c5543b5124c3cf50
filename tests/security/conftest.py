"""corral attacked as a hostile tenant would: the fixtures of ``tests/security``.

Every test here performs one attack for real, against a real ``corral serve`` on runc
(real sandboxes, a real SQLite store, real HTTP), and asserts two things: the attack
failed, and the host and the other tenant did not notice.

The server is started once per test session, like the end-to-end one, but apart from
it: its own runc root, bridge, address pool, NFLOG group and store. Its data dir
(``/var/tmp/corral-security-<slot>``) is kept between runs so the ``base`` template is
built once per machine and slot. A slot is a free number (flock); two test sessions at
once take two slots, so their servers never share a bridge, a pool or a data dir. Two orgs, ``alpha`` (the
attacker, unless a test says otherwise) and ``beta`` (the bystander), each have an
owner key; ``Tenant.key(role)`` mints more.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.dns_upstream import DnsUpstream
from tests.support import process
from tests.support.host_network import remove_network
from tests.support.process import CORRAL, tail
from tests.support.template import build_base

SLOTS = 16
PROMISED_DISK_MB = 100 * 1024
pytestmark = pytest.mark.integration


@dataclass
class Tenant:
    """One org on the server: its owner key and an HTTP client of ``/api`` with it."""

    name: str
    key: str
    server: SecurityServer
    made: list[str] = field(default_factory=list)

    def http(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.server.url}/api", headers={"X-API-Key": key or self.key}, timeout=120
        )

    def key_of(self, role: str) -> str:
        """A new API key of this org with ``role`` (owner, admin, developer, viewer)."""
        return self.server.cli("keys", "create", "--role", role, "--org", self.name).splitlines()[-1].strip()

    def api_key(self, role: str) -> str:
        """``key_of`` through the API with the owner key (no CLI process: ~50x faster)."""
        with self.http() as http:
            answer = http.post("/keys", json={"role": role})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["key"])

    def create(self, **body: Any) -> dict[str, Any]:
        """A sandbox of this org (template ``base`` unless ``body`` says otherwise),
        killed when the session ends; the create's JSON."""
        with self.http() as http:
            answer = http.post("/sandboxes", json={"templateID": "base", **body})
        assert answer.status_code in (200, 201), answer.text
        created: dict[str, Any] = answer.json()
        self.made.append(created["sandboxID"])
        return created

    def run(self, sandbox_id: str, command: str, timeout: int = 60) -> dict[str, Any]:
        """``exec/run`` of ``command`` under ``sh -c``; the answer's JSON (exitCode, stdout, stderr)."""
        with self.http() as http:
            answer = http.post(
                f"/sandboxes/{sandbox_id}/exec/run",
                json={"cmd": "sh", "args": ["-c", command], "timeout": timeout},
                timeout=timeout + 30,
            )
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    def kill(self, sandbox_id: str) -> None:
        with self.http() as http:
            http.delete(f"/sandboxes/{sandbox_id}")

    def python(self, sandbox_id: str, code: str, timeout: int = 60) -> dict[str, Any]:
        """``code`` run by ``python3`` in the sandbox (sent base64-encoded, so it may hold
        any quote); the answer's JSON, as ``run``."""
        encoded = base64.b64encode(code.encode()).decode()
        return self.run(sandbox_id, f"echo {encoded} | base64 -d | python3 -", timeout)


@dataclass
class SecurityServer:
    url: str
    data_dir: Path
    database_url: str
    log: Path
    env: dict[str, str]
    pid: int  # of the corral serve process
    tenants: dict[str, Tenant] = field(default_factory=dict)

    def cli(self, *args: str) -> str:
        """Run ``corral ARGS`` against this server's store; its stdout (fails the test on error)."""
        proc = subprocess.run(
            [CORRAL, *args, "--data-dir", str(self.data_dir), "--database-url", self.database_url],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"corral {' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def healthy(self) -> bool:
        """The server still answers (the check every attack ends with)."""
        try:
            return httpx.get(f"{self.url}/healthz", timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self) -> str:
        return tail(self.log)


def _take_slot() -> tuple[int, int]:
    """A free slot number and the fd that holds it (closed: the slot is free again)."""
    locks = Path("/run/corral-security-slots")
    locks.mkdir(parents=True, exist_ok=True)
    for slot in range(SLOTS):
        fd = os.open(locks / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, fd
        except BlockingIOError:
            os.close(fd)
    pytest.fail(f"all {SLOTS} security-server slots are taken", pytrace=False)


@pytest.fixture(scope="session")
def dns_upstream() -> Iterator[DnsUpstream]:
    """The server's only DNS upstream, on loopback (``dns_upstream.py``): names under
    ``SILENT`` are never answered, those under ``ANSWERED`` at once, the rest relayed to
    the host's own upstreams (so other tests resolve as they would without it)."""
    upstream = DnsUpstream().start()
    yield upstream
    upstream.close()


@pytest.fixture(scope="session")
def security_server(
    tmp_path_factory: pytest.TempPathFactory, dns_upstream: DnsUpstream
) -> Iterator[SecurityServer]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    slot, slot_fd = _take_slot()
    data_dir = Path(f"/var/tmp/corral-security-{slot}")
    run_dir = f"/run/corral-security-{slot}"
    work = tmp_path_factory.mktemp("security-server")
    seed = f"ek_sec{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{run_dir}/runc",
        "CORRAL_NETWORK_BRIDGE": f"corralsec{slot}",
        "CORRAL_NETWORK_POOL": f"10.{220 + slot}.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": str(220 + slot),
        "CORRAL_NETWORK_STATE_DIR": f"{run_dir}/network",
        "CORRAL_API_KEY": seed,
        "CORRAL_NETWORK_DNS_UPSTREAMS": json.dumps([dns_upstream.address]),
        # small build limits, so tests/security/test_builds.py's bombs hit them fast
        "CORRAL_BUILD_MEMORY_MB": "512",
        "CORRAL_BUILD_PIDS_LIMIT": "256",
        # the disk this node may promise: ~50 default sandboxes, 5 of the largest
        # (tests/security/test_bounds.py floods it)
        "CORRAL_MAX_PROMISED_DISK_MB": str(PROMISED_DISK_MB),
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    build_base(env, work / "template-build.log", data_dir)
    log = work / "server.log"
    proc, url = process.start(["--data-dir", str(data_dir), "--database-url", database_url], env, log)
    server = SecurityServer(
        url=url, data_dir=data_dir, database_url=database_url, log=log, env=env, pid=proc.pid
    )
    try:
        process.wait_healthy(url, proc, log)
        server.tenants["default"] = Tenant("default", seed, server)
        for name in ("alpha", "beta"):
            server.cli("org", "create", name)
            server.tenants[name] = Tenant(name, "", server)
            server.tenants[name].key = server.tenants[name].key_of("owner")
        yield server
        for tenant in server.tenants.values():
            for sandbox_id in tenant.made:
                try:
                    tenant.kill(sandbox_id)
                except httpx.HTTPError:
                    pass
    finally:
        process.stop(proc)
        try:  # the network goes while the slot that names it is still held
            remove_network(env["CORRAL_NETWORK_BRIDGE"], env["CORRAL_NETWORK_STATE_DIR"])
        finally:
            os.close(slot_fd)


@pytest.fixture(scope="session")
def alpha(security_server: SecurityServer) -> Tenant:
    """The attacking org."""
    return security_server.tenants["alpha"]


@pytest.fixture(scope="session")
def beta(security_server: SecurityServer) -> Tenant:
    """The bystander org: what it has must not notice any attack."""
    return security_server.tenants["beta"]


@pytest.fixture(scope="session")
def attacker_box(alpha: Tenant) -> str:
    """One long-lived sandbox of ``alpha`` for attacks that leave it usable (read-only
    probes); an attack that breaks or fills its sandbox makes its own."""
    return str(alpha.create(timeout=3600)["sandboxID"])


@pytest.fixture(scope="session")
def bystander_box(beta: Tenant) -> str:
    """One long-lived sandbox of ``beta``: every attack may check it still works."""
    return str(beta.create(timeout=3600)["sandboxID"])


@pytest.fixture
def unnoticed(security_server: SecurityServer, beta: Tenant, bystander_box: str) -> Callable[[], None]:
    """The check an attack ends with: the server answers, and the other org's sandbox
    still runs a command and sees its own files only."""

    def check() -> None:
        assert security_server.healthy(), security_server.log_tail()
        result = beta.run(bystander_box, "echo alive; cat /etc/hostname", timeout=30)
        assert result["exitCode"] == 0 and result["stdout"].startswith("alive\n"), result

    return check
