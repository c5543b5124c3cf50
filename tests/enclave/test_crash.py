"""A crash of the server while sessions run or wait: after the restart none is left
``running`` or ``pending`` (each ends ``failed``, saying where the crash found it, and
is torn down) and no session sandbox is left on the node. Its own server and data dir
(``/var/tmp/corral-enclave-crash``), since a data dir has one server at a time."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.enclave.conftest import held
from tests.support import process
from tests.support.conditions import eventually
from tests.support.host_network import remove_network
from tests.support.process import ServerLife
from tests.support.template import build_base

DATA_DIR = Path("/var/tmp/corral-enclave-crash")
RUN_DIR = "/run/corral-enclave-crash"
pytestmark = pytest.mark.integration


def _start(args: list[str], env: dict[str, str], log: Path, key: str) -> ServerLife:
    proc, url = process.start(args, env, log)
    process.wait_healthy(url, proc, log)
    return ServerLife(proc, url, log, key)


def _runc_ids() -> str:
    done = subprocess.run(
        ["runc", "--root", f"{RUN_DIR}/runc", "list", "-q"], check=False, capture_output=True, text=True
    )
    return done.stdout


def test_a_crash_leaves_no_session_running_and_no_sandbox(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    with held(DATA_DIR):
        _crash_and_restart(tmp_path)


def _crash_and_restart(tmp_path: Path) -> None:
    key = f"ek_crash{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": "corralencx0",
        "CORRAL_NETWORK_POOL": "10.212.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "212",
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": key,
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_MAX_CONCURRENT_SESSIONS": "1",
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    build_base(env, tmp_path / "build.log", DATA_DIR)
    args = ["--data-dir", str(DATA_DIR), "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"]
    life = _start(args, env, tmp_path / "server-1.log", key)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=life.url, headers=headers, timeout=60) as http:
            code = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
            running = http.post("/sessions", json={"code": code, "limits": {"wallClockSeconds": 600}}).json()[
                "id"
            ]
            waiting = http.post("/sessions", json={"code": "print(1)"}).json()["id"]
            eventually(lambda: http.get(f"/sessions/{running}").json()["phase"] == "running", 60)
            trail = http.get(f"/sessions/{running}/audit").json()["events"]
            sandbox = next(e["sandbox"] for e in trail if e["type"] == "sandbox_started")
            assert sandbox in _runc_ids()
            assert http.get(f"/sessions/{waiting}").json()["phase"] == "pending"
        life.crash()
        life = _start(args, env, tmp_path / "server-2.log", key)
        with httpx.Client(base_url=life.url, headers=headers, timeout=60) as http:
            for sid, where in ((running, "running"), (waiting, "pending")):
                session = http.get(f"/sessions/{sid}").json()
                assert session["phase"] == "torn_down" and session["outcome"] == "failed", session
                assert session["error"] == f"corral restarted while it was {where}"
                frames = [
                    json.loads(x[6:])
                    for x in http.get(f"/sessions/{sid}/stream").text.splitlines()
                    if x[:6] == "data: "
                ]
                assert frames[-1]["kind"] == "end" and frames[-1]["phase"] == "failed", frames
                assert "session_torn_down" in [
                    e["type"] for e in http.get(f"/sessions/{sid}/audit").json()["events"]
                ]
            assert sandbox not in _runc_ids()
            got = http.get(f"/api/sandboxes/{sandbox}", headers={"X-API-Key": key})
            assert got.status_code == 404 or got.json()["status"] == "stopped", got.text
    finally:
        life.stop()
        # the last server on this network is stopped: its network goes too
        remove_network(env["CORRAL_NETWORK_BRIDGE"], env["CORRAL_NETWORK_STATE_DIR"])
