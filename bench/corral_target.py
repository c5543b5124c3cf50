"""corral under test: its HTTP API, and optionally a ``corral serve`` started for the run.

``CorralServer`` runs ``corral serve`` on a free loopback port with a temporary data
dir whose ``templates/`` is a symlink to a template cache, so a run never rebuilds the
base root. Its runc state lives in the temporary dir too, so nothing it makes is
confused with another server's sandboxes. ``stop`` ends the server it started (by
pid) and removes whatever the server left behind. ``Code`` says which corral it runs
(this tree's, or an earlier revision's checked out by ``baseline.Worktree``);
``Network`` gives it a sandbox network of its own, removed by ``stop``.

``CorralTarget`` drives the OpenComputer surface with an API key:
``POST /api/sandboxes``, ``POST /api/sandboxes/{id}/exec/run``, ``DELETE
/api/sandboxes/{id}``. Memory is read from the host through runc's state of each
sandbox (its init pid, hence its cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from memory import ContainerMemory, container_memory, proc_memory
from proc import CommandFailed, run, run_sync
from reference import mounted_under, unmount


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def corral_command() -> list[str]:
    beside = Path(sys.executable).parent / "corral"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("corral")
    if found:
        return [found]
    return [sys.executable, "-m", "corral.cli.main"]


@dataclass(frozen=True)
class Code:
    """Which corral a process runs. ``root`` None: this tree's, through its installed
    ``corral`` command. Else a checkout of another revision (``baseline.Worktree``): this
    virtualenv's python runs ``-m corral.cli.main`` from ``root`` with ``PYTHONPATH`` at
    ``root`` (``-m`` puts the working directory first on ``sys.path``), so ``import
    corral`` finds that checkout's package; ``Worktree.add`` checks that it does."""

    name: str = "corral"
    root: Path | None = None

    def command(self, *args: str) -> list[str]:
        if self.root is None:
            return [*corral_command(), *args]
        return [sys.executable, "-m", "corral.cli.main", *args]

    def env(self) -> dict[str, str]:
        return {} if self.root is None else {"PYTHONPATH": str(self.root)}


HEAD = Code()


@dataclass(frozen=True)
class Network:
    """A server's own sandbox network: its bridge (which also names its nftables tables
    and prefixes its namespaces), address pool and NFLOG group; its state dir is given
    by the server. ``remove`` deletes what a stopped server leaves of it (a node keeps
    them between starts): veths on the bridge, its namespaces, both tables, the bridge."""

    bridge: str
    pool: str
    nflog_group: int

    def env(self, state_dir: Path) -> dict[str, str]:
        return {
            "CORRAL_NETWORK_BRIDGE": self.bridge,
            "CORRAL_NETWORK_POOL": self.pool,
            "CORRAL_NETWORK_NFLOG_GROUP": str(self.nflog_group),
            "CORRAL_NETWORK_STATE_DIR": str(state_dir),
        }

    def exists(self) -> bool:
        return Path("/sys/class/net", self.bridge).exists()

    def remove(self) -> None:
        listed = run_sync(["ip", "-j", "link", "show", "master", self.bridge])
        for link in json.loads(listed.stdout or b"[]") if listed.returncode == 0 else []:
            run_sync(["ip", "link", "del", str(link["ifname"])])
        netns = Path("/run/netns")
        for name in sorted(os.listdir(netns)) if netns.is_dir() else []:
            if name.startswith(f"{self.bridge}-"):
                run_sync(["ip", "netns", "del", name])
        for family in ("inet", "bridge"):
            run_sync(["nft", "delete", "table", family, self.bridge])
        if self.exists():
            run_sync(["ip", "link", "del", self.bridge])


def template_roots(templates_dir: Path, name: str = "base") -> list[Path]:
    """Finished roots of template ``name`` under a templates dir, newest first."""
    roots = [p for p in (templates_dir / name).glob("*/rootfs") if p.is_dir()]
    return sorted(roots, key=lambda p: p.stat().st_mtime, reverse=True)


def require_template(templates_dir: Path, name: str = "base") -> list[Path]:
    """``template_roots``, or the run ends saying how to build the template."""
    roots = template_roots(templates_dir, name)
    if not roots:
        sys.exit(
            f"no {name} template under {templates_dir}: "
            f"corral template build {name} --data-dir {templates_dir.parent}"
        )
    return roots


DEFAULT_CACHE = Path("/var/tmp/corral-bench-cache")


def ensure_template_cache(cache_data_dir: Path = DEFAULT_CACHE, name: str = "base") -> Path:
    """The templates dir of the benchmarks' cache data dir, with ``name`` built."""
    templates = cache_data_dir / "templates"
    if not template_roots(templates, name):
        build_template_cache(cache_data_dir, name)
    return templates


def template_root(cache_data_dir: Path, code: Code, name: str = "base") -> Path:
    """The root of ``code``'s own build of ``name`` in the cache data dir, built if it is
    not (``corral template build`` of that code: a no-op when its recipe's digest is
    built). The cache keeps builds by digest, so revisions whose recipes differ share it
    without replacing each other's."""
    cache_data_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"template {name!r} of {code.name} in {cache_data_dir} (built once; reused by later runs)", flush=True
    )
    built = subprocess.run(
        code.command("template", "build", name, "--data-dir", str(cache_data_dir)),
        env={**os.environ, "COLUMNS": "200", **code.env()},
        cwd=code.root,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=1800,
        check=False,
    )
    output = built.stdout.decode(errors="replace")
    found = re.search(rf"template {re.escape(name)}: ([0-9a-f]{{12}})", output)
    if built.returncode != 0 or found is None:
        raise CommandFailed(
            f"{code.name}: template build {name} failed: {(output + built.stderr.decode())[-800:]}"
        )
    roots = list((cache_data_dir / "templates" / name).glob(f"{found.group(1)}*/rootfs"))
    if len(roots) != 1:
        raise CommandFailed(f"{code.name}: no single build {found.group(1)} of {name} in {cache_data_dir}")
    return roots[0]


def build_template_cache(cache_data_dir: Path, name: str = "base") -> None:
    """``corral template build`` into a data dir kept between runs (not timed)."""
    cache_data_dir.mkdir(parents=True, exist_ok=True)
    print(f"building template {name!r} into {cache_data_dir} (once; reused by later runs)", flush=True)
    run_sync(
        [*corral_command(), "template", "build", name, "--data-dir", str(cache_data_dir)],
        timeout=1800,
        check=True,
    )


class CorralServer:
    """A ``corral serve`` child process with a throwaway data dir."""

    def __init__(
        self,
        templates: Path,
        workdir: Path | None = None,
        command: list[str] | None = None,
        code: Code = HEAD,
        network: Network | None = None,
    ) -> None:
        self.templates = templates
        self.code = code
        self.network = network
        self.command = command or code.command("serve")
        self.extra_env: dict[str, str] = {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = f"ek_bench{secrets.token_hex(6)}_{secrets.token_hex(16)}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="corral-bench-", dir=workdir))
        self.data_dir.chmod(0o755)  # mapped uids must reach the sandbox roots below
        self.runc_root = self.data_dir / "runc"
        self.log_path = self.data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.owns_network = False  # set once launch found the bridge not there

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            CORRAL_DATA_DIR=str(self.data_dir),
            CORRAL_HOST="127.0.0.1",
            CORRAL_PORT=str(self.port),
            CORRAL_API_KEY=self.api_key,
            CORRAL_RUNC_ROOT=str(self.runc_root),
        )
        env.update(self.code.env())
        if self.network is not None:
            env.update(self.network.env(self.data_dir / "network"))
        env.update(self.extra_env)
        return env

    def launch(self) -> None:
        if self.network is not None and self.network.exists():
            raise CommandFailed(
                f"bridge {self.network.bridge} exists: another benchmark's, or left by one "
                f"(ip link del {self.network.bridge}; nft delete table inet {self.network.bridge})"
            )
        self.owns_network = self.network is not None
        (self.data_dir / "templates").symlink_to(self.templates.resolve(), target_is_directory=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.code.root,
            )

    async def start(self, timeout: float = 60.0) -> None:
        """Launch the server and return once its API answers."""
        self.launch()
        assert self.process is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": self.api_key}) as client:
            while True:
                if self.process.poll() is not None:
                    raise CommandFailed(f"corral serve exited {self.process.returncode}: {self.log_tail()}")
                try:
                    if (await client.get("/api/sandboxes", timeout=2.0)).status_code < 500:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise CommandFailed(f"corral serve did not answer in {timeout:.0f}s: {self.log_tail()}")
                await asyncio.sleep(0.1)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CorralServer]:
        """The server started, and stopped (with all it left) however the block ends;
        when it ends in an error, the tail of the server's log goes to stderr first."""
        try:
            await self.start()
            yield self
        except BaseException:
            print(self.log_tail(4000), file=sys.stderr)
            raise
        finally:
            self.stop()

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self, keep_log: Path | None = None) -> None:
        """End the server we started, then remove what it left: containers in our runc
        root, mounts under the data dir, the data dir (the template cache is only
        linked, never removed), and its network when it was given one."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if keep_log is not None and self.log_path.exists():
            shutil.copyfile(self.log_path, keep_log)
        if self.runc_root.exists():
            listed = run_sync(["runc", "--root", str(self.runc_root), "list", "-q"])
            for cid in listed.stdout.decode().split():
                run_sync(["runc", "--root", str(self.runc_root), "delete", "-f", cid])
        for point in mounted_under(self.data_dir):
            unmount(point)
        if self.network is not None and self.owns_network:
            self.network.remove()
        templates = self.data_dir / "templates"
        if templates.is_symlink():
            templates.unlink()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class CorralTarget:
    """corral through its HTTP API (``name``: ``corral``, or ``corral@<rev>`` for an
    earlier revision's server)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        runc_root: Path,
        template: str = "base",
        server_pid: int | None = None,
        name: str = "corral",
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.runc_root = runc_root
        self.template = template
        self.server_pid = server_pid
        self.live: set[str] = set()
        self.client = httpx.AsyncClient(
            base_url=self.url,
            headers={"X-API-Key": api_key},
            timeout=120.0,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        self.label = (
            f"HTTP API at {self.url}: POST /api/sandboxes {{templateID: {template}}}; "
            "POST /api/sandboxes/{id}/exec/run {cmd: true}; DELETE /api/sandboxes/{id}"
        )

    async def setup(self) -> None:
        response = await self.client.get("/api/sandboxes")
        if response.status_code != 200:
            raise CommandFailed(f"GET /api/sandboxes: {response.status_code} {response.text[:300]}")

    async def create(self) -> str:
        response = await self.client.post("/api/sandboxes", json={"templateID": self.template})
        if response.status_code not in (200, 201):
            raise CommandFailed(f"create: {response.status_code} {response.text[:300]}")
        sandbox_id = str(response.json()["sandboxID"])
        self.live.add(sandbox_id)
        return sandbox_id

    async def exec_true(self, sandbox_id: str) -> None:
        response = await self.client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"})
        if response.status_code != 200:
            raise CommandFailed(f"exec/run: {response.status_code} {response.text[:300]}")
        code = response.json().get("exitCode")
        if code != 0:
            raise CommandFailed(f"exec/run true exited {code}: {response.text[:300]}")

    async def get(self, sandbox_id: str) -> None:
        """One authenticated read: the HTTP + auth + store floor under every call."""
        response = await self.client.get(f"/api/sandboxes/{sandbox_id}")
        if response.status_code != 200:
            raise CommandFailed(f"get: {response.status_code} {response.text[:300]}")

    async def kill(self, sandbox_id: str) -> None:
        response = await self.client.delete(f"/api/sandboxes/{sandbox_id}")
        if response.status_code not in (200, 204, 404):
            raise CommandFailed(f"kill: {response.status_code} {response.text[:300]}")
        self.live.discard(sandbox_id)

    async def _container_pids(self) -> dict[str, int]:
        listed = (await run(["runc", "--root", str(self.runc_root), "list", "-f", "json"])).check()
        entries = json.loads(listed.stdout or b"null") or []
        return {str(e["id"]): int(e["pid"]) for e in entries if int(e.get("pid") or 0) > 0}

    async def memory(self, sandbox_ids: list[str]) -> list[ContainerMemory]:
        pids = await self._container_pids()
        out: list[ContainerMemory] = []
        for sandbox_id in sandbox_ids:
            match = [pid for cid, pid in pids.items() if cid == sandbox_id or sandbox_id in cid]
            if not match:
                raise CommandFailed(f"no runc container for {sandbox_id} in {self.runc_root}")
            out.append(container_memory(match[0]))
        return out

    def server_pss(self) -> int | None:
        """PSS of the control plane we started, or None when we did not start it."""
        if self.server_pid is None:
            return None
        mem = proc_memory(self.server_pid)
        return mem.pss if mem is not None else None

    async def close(self) -> None:
        for sandbox_id in list(self.live):
            try:
                await self.kill(sandbox_id)
            except (CommandFailed, httpx.HTTPError):
                pass
        await self.client.aclose()
