"""Crash safety: ``kill -9`` of the server while sandboxes run and a create is in
flight. After a restart the running sandboxes are kept (same files, processes still
there), and nothing of the half-made one is left: no row, container, mount, loop
device, network namespace, veth, nor its directory.

This needs a server of its own (the shared one must not die): the same helpers as
``conftest.security_server``, its own data dir, runc root, bridge, address pool and
NFLOG group (derived from the shared server's slot, so two sessions never clash), the
shared server's templates borrowed through a symlink, no standby sandboxes and no
namespaces made ahead (so every trace is a sandbox's).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from corral.network.namespace import veth_name
from corral.runtime import loopdev, mounts
from tests.security.conftest import SecurityServer
from tests.support import process
from tests.support.conditions import eventually
from tests.support.host_network import remove_network
from tests.support.process import ServerLife, tail

WAIT_S = 30


@dataclass
class CrashSite:
    data_dir: Path
    runc_root: str
    bridge: str
    env: dict[str, str]
    work: Path
    key: str
    lives: list[ServerLife]

    @property
    def sandboxes(self) -> Path:
        return self.data_dir / "sandboxes"

    def start(self) -> ServerLife:
        log = self.work / f"server-{len(self.lives)}.log"
        args = ["--data-dir", str(self.data_dir)]
        args += ["--database-url", f"sqlite+aiosqlite:///{self.work / 'corral.db'}"]
        proc, url = process.start(args, self.env, log)
        node = ServerLife(proc, url, log, self.key)
        self.lives.append(node)
        process.wait_healthy(url, proc, log)
        return node

    def traces(self) -> dict[str, set[str]]:
        """What exists of each sandbox, by kind: sandbox ids."""
        prefix = f"{self.sandboxes}/"
        runc = subprocess.run(
            ["runc", "--root", self.runc_root, "list", "-q"], capture_output=True, text=True, check=False
        )
        netns = Path("/run/netns")
        ports = Path(f"/sys/class/net/{self.bridge}/brif")
        return {
            "dirs": {p.name for p in self.sandboxes.iterdir() if not p.name.startswith(".")}
            if self.sandboxes.exists()
            else set(),
            "mounts": {e.path[len(prefix) :].split("/")[0] for e in mounts.under(self.sandboxes)},
            "loops": {
                b[len(prefix) :].split("/")[0]
                for b in loopdev.backing_files().values()
                if b.startswith(prefix)
            },
            "containers": set(runc.stdout.split()),
            "netns": {
                n.name[len(self.bridge) + 1 :]
                for n in netns.iterdir()
                if n.name.startswith(self.bridge + "-")
            }
            if netns.exists()
            else set(),
            "veths": {p.name for p in ports.iterdir()} if ports.exists() else set(),
        }


@pytest.fixture
def site(security_server: SecurityServer, tmp_path: Path) -> Iterator[CrashSite]:
    slot = int(str(security_server.data_dir).rsplit("-", 1)[1])
    data_dir = Path(f"{security_server.data_dir}-crash")
    run_dir = f"/run/corral-security-crash-{slot}"
    shutil.rmtree(data_dir / "sandboxes", ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    templates = data_dir / "templates"
    if not templates.is_symlink():
        shutil.rmtree(templates, ignore_errors=True)
        templates.symlink_to(security_server.data_dir / "templates")
    key = f"ek_crash{secrets.token_hex(4)}_{secrets.token_hex(24)}"
    bridge = f"corralsecc{slot}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{run_dir}/runc",
        "CORRAL_NETWORK_BRIDGE": bridge,
        "CORRAL_NETWORK_POOL": f"10.{236 + slot}.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": str(236 + slot),
        "CORRAL_NETWORK_STATE_DIR": f"{run_dir}/network",
        "CORRAL_NETWORK_READY_NAMESPACES": "0",
        "CORRAL_STANDBY_SANDBOXES": "0",
        "CORRAL_API_KEY": key,
    }
    made = CrashSite(data_dir, f"{run_dir}/runc", bridge, env, tmp_path, key, [])
    yield made
    for node in made.lives:
        if node.proc.poll() is None:
            try:
                with node.http() as http, ThreadPoolExecutor(4) as pool:
                    listed = http.get("/sandboxes").json()
                    list(pool.map(lambda s: http.delete(f"/sandboxes/{s['sandboxID']}"), listed))
            except httpx.HTTPError:
                pass
            process.stop(node.proc)
    # every server on this network is stopped: its network goes too
    remove_network(bridge, env["CORRAL_NETWORK_STATE_DIR"])


def test_kill_9_mid_create_leaks_nothing_and_keeps_running_sandboxes(site: CrashSite) -> None:
    node = site.start()
    kept: dict[str, str] = {}
    with node.http() as http:
        for _ in range(2):
            sandbox = http.post("/sandboxes", json={"templateID": "base", "timeout": 0})
            assert sandbox.status_code == 201, sandbox.text
            sid = sandbox.json()["sandboxID"]
            run = http.post(
                f"/sandboxes/{sid}/exec/run",
                json={"cmd": "sh", "args": ["-c", f"echo {sid} > /root/mark; (sleep 3600 &) ; echo ok"]},
            )
            assert run.status_code == 200 and run.json()["stdout"] == "ok\n", run.text
            kept[sid] = sid

    def create() -> None:
        try:
            with node.http() as http:
                http.post("/sandboxes", json={"templateID": "base", "timeout": 0})
        except httpx.HTTPError:
            pass  # the server dies under it

    threading.Thread(target=create, daemon=True).start()
    # strike while the third sandbox is half made: its dir made and, if we see it within
    # a second, its container created (its row is written only once its agent answers)
    doomed: set[str] = set()

    def create_started() -> bool:
        doomed.update({p.name for p in site.sandboxes.iterdir() if not p.name.startswith(".")} - set(kept))
        return bool(doomed)

    eventually(create_started, WAIT_S, lambda: f"the create never started:\n{tail(node.log)}", 0.002)
    [doomed_id] = doomed
    started = time.monotonic() + 1
    while time.monotonic() < started and not Path(site.runc_root, doomed_id).exists():
        time.sleep(0.001)
    node.crash()
    half_made = site.traces()
    assert doomed & (half_made["dirs"] | half_made["containers"]), half_made

    node = site.start()
    with node.http() as http:
        listed = {s["sandboxID"]: s["status"] for s in http.get("/sandboxes").json()}
        assert listed == {sid: "running" for sid in kept}, listed
        for sid in kept:
            run = http.post(
                f"/sandboxes/{sid}/exec/run",
                json={"cmd": "sh", "args": ["-c", "cat /root/mark; pgrep -c sleep"]},
            )
            assert run.status_code == 200 and run.json()["stdout"] == f"{sid}\n1\n", (
                run.text
            )  # processes kept
        for sid in doomed:
            assert http.get(f"/sandboxes/{sid}").status_code == 404
    expected = {
        "dirs": set(kept),
        "mounts": set(kept),
        "loops": set(kept),
        "containers": set(kept),
        "netns": set(kept),
        "veths": {veth_name(sid) for sid in kept},
    }
    eventually(
        lambda: site.traces() == expected,
        WAIT_S,
        lambda: f"left after the restart: {site.traces()} (expected {expected})",
        0.2,
    )
    assert not any(Path(f"/sys/class/net/{veth_name(sid)}").exists() for sid in doomed)
