"""kill -9 of the server in the middle of a checkpoint, a fork and a hibernate: after a
restart there is no half-made checkpoint, no leaked mount or loop device, and each
sandbox is as it was before the operation or as it would have been after it.

The server runs as a subprocess with ``CORRAL_TEST_PAUSE`` (``corral.pausepoints``):
it logs when it reaches the chosen point and sleeps there; the test kills it then.
It has a data dir, store and runc root of its own (no network), and borrows the
session server's templates (a symlink), so nothing of the shared server is touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.runtime import loopdev, mounts
from tests.e2e.conftest import Server
from tests.support import process
from tests.support.conditions import eventually
from tests.support.process import ServerLife, tail

pytestmark = pytest.mark.e2e

CRASH_DIR = Path(os.environ.get("CORRAL_CRASH_DATA_DIR", "/var/tmp/corral-e2e-crash"))
RUNC_ROOT = "/run/corral-e2e-crash/runc"
WAIT_S = 60


@pytest.fixture
def lives(server: Server, tmp_path: Path) -> Iterator[list[ServerLife]]:
    shutil.rmtree(CRASH_DIR / "checkpoints", ignore_errors=True)
    CRASH_DIR.mkdir(parents=True, exist_ok=True)
    templates = CRASH_DIR / "templates"
    if not templates.is_symlink():
        shutil.rmtree(templates, ignore_errors=True)
        templates.symlink_to(server.data_dir / "templates")
    started: list[ServerLife] = []
    yield started
    for node in started:
        if node.proc.poll() is None:
            with node.http() as http:
                for sb in http.get("/sandboxes").json():
                    http.delete(f"/sandboxes/{sb['sandboxID']}")
            node.stop()


def start(lives: list[ServerLife], tmp_path: Path, pause: str = "", standby: int = 0) -> ServerLife:
    key = lives[0].key if lives else f"ek_crash{secrets.token_hex(4)}_{secrets.token_hex(24)}"
    log = tmp_path / f"server-{len(lives)}.log"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": RUNC_ROOT,
        "CORRAL_NETWORK_ENABLED": "false",
        "CORRAL_API_KEY": key,
        "CORRAL_TEST_PAUSE": pause,
        "CORRAL_STANDBY_SANDBOXES": str(standby),  # 0: only the sandboxes a test makes
    }
    args = ["--data-dir", str(CRASH_DIR), "--database-url", f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"]
    proc, url = process.start(args, env, log)
    node = ServerLife(proc, url, log, key)
    lives.append(node)
    process.wait_healthy(url, proc, log, WAIT_S)
    return node


def in_background(node: ServerLife, method: str, path: str, body: object = None) -> threading.Thread:
    def call() -> None:
        try:
            with node.http() as http:
                http.request(method, path, json=body)
        except httpx.HTTPError:
            pass  # the server dies under it

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def exec_run(node: ServerLife, sandbox_id: str, script: str) -> str:
    with node.http() as http:
        r = http.post(f"/sandboxes/{sandbox_id}/exec/run", json={"cmd": "sh", "args": ["-c", script]})
    assert r.status_code == 200 and r.json()["exitCode"] == 0, r.text
    return str(r.json()["stdout"])


def traces() -> tuple[set[str], set[str], set[str]]:
    """Sandbox dirs, and ids with a mount or a loop device, under the crash data dir."""
    root = CRASH_DIR / "sandboxes"
    dirs = {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.exists() else set()
    prefix = f"{root}/"
    mounted = {e.path[len(prefix) :].split("/")[0] for e in mounts.under(root)}
    looped = {
        b[len(prefix) :].split("/")[0] for b in loopdev.backing_files().values() if b.startswith(prefix)
    }
    return dirs, mounted, looped


def test_crashes_mid_checkpoint_fork_and_hibernate(lives: list[ServerLife], tmp_path: Path) -> None:
    node = start(lives, tmp_path, "checkpoint.frozen=120")
    with node.http() as http:
        sid = http.post("/sandboxes", json={"timeout": 0}).json()["sandboxID"]
    files = "head -c 10485760 /dev/urandom > /root/big && echo one > /root/a && sha256sum /root/big /root/a"
    digests = exec_run(node, sid, files)
    in_background(node, "POST", f"/sandboxes/{sid}/checkpoints", {"name": "doomed"})
    node.wait_for("pause point checkpoint.frozen reached")
    freezer = Path("/sys/fs/cgroup/freezer/corral") / sid / "freezer.state"
    assert freezer.read_text().strip() == "FROZEN"  # it is mid-checkpoint
    node.crash()

    node = start(lives, tmp_path, "fork.copied=120")
    with node.http() as http:
        [doomed] = http.get(f"/sandboxes/{sid}/checkpoints").json()
    assert doomed["status"] == "failed" and "interrupted" in doomed["error"]
    assert list((CRASH_DIR / "checkpoints").iterdir()) == []  # nothing half-made
    assert freezer.read_text().strip() == "THAWED"
    assert (
        exec_run(node, sid, "sha256sum /root/big /root/a && echo w > /root/w && cat /root/w")
        == digests + "w\n"
    )

    with node.http() as http:
        good = http.post(f"/sandboxes/{sid}/checkpoints", json={"name": "good"}).json()["id"]
        eventually(lambda: http.get(f"/sandboxes/{sid}/checkpoints").json()[-1]["status"] == "ready", WAIT_S)
    in_background(node, "POST", f"/sandboxes/from-checkpoint/{good}", {"timeout": 0})
    node.wait_for("pause point fork.copied reached")
    assert len(traces()[0]) == 2  # the fork's disk is made
    node.crash()

    node = start(lives, tmp_path, "hibernate.stopped=120")
    with node.http() as http:
        assert [sb["sandboxID"] for sb in http.get("/sandboxes").json()] == [sid]
        assert http.get(f"/sandboxes/{sid}/checkpoints").json()[-1]["status"] == "ready"
    assert traces() == ({sid}, {sid}, {sid})  # the half-made fork is gone: dir, mounts, loop

    in_background(node, "POST", f"/sandboxes/{sid}/hibernate")
    node.wait_for("pause point hibernate.stopped reached")
    node.crash()

    node = start(lives, tmp_path)
    with node.http() as http:
        assert http.get(f"/sandboxes/{sid}").json()["status"] == "hibernated"  # as after
    assert traces() == ({sid}, set(), set())  # disk kept, nothing mounted
    assert exec_run(node, sid, "sha256sum /root/big /root/a") == digests  # wakes, same files
    with node.http() as http:
        assert http.get(f"/sandboxes/{sid}").json()["status"] == "running"


def test_a_crash_leaves_no_sandbox_started_ahead(lives: list[ServerLife], tmp_path: Path) -> None:
    node = start(lives, tmp_path, standby=2)

    def standing_by() -> bool:
        # two sandboxes standing by, each whole: its dir, its mounted root, its loop device
        # (a standby being started has its dir a moment before its mount). At least two:
        # the budget is 2 for each of the default and the code sessions' templates, and
        # those not built leave their share to the default one, so more may be starting.
        dirs, mounted, looped = traces()
        return len(dirs & mounted & looped) >= 2

    eventually(standing_by, WAIT_S, lambda: f"{traces()}\n{tail(node.log)}", 0.1)
    node.crash()

    node = start(lives, tmp_path)  # reconcile: they are in no row, so they are removed
    assert traces() == (set(), set(), set())
    with node.http() as http:
        assert http.get("/sandboxes").json() == []
