"""ProcessRuntime: every sandbox is the real agent run as a plain local process.

**NO ISOLATION.** Commands run as the corral user, on the host's filesystem, network,
pids and resources; ``Limits`` and egress policies are ignored. It exists so the layers above the runtime
(services, API, the agent client) can be tested without root or runc, and so corral can
be tried on a machine without runc. Never expose it to untrusted users.

A sandbox is a directory ``<state_dir>/<id>/`` holding ``agent.sock`` (bound by the
agent itself, ``--socket``), ``agent.pid``, ``agent.log`` and ``home/`` (the agent's
working directory and ``HOME``). The agent runs in a session of its own, so it
outlives the corral process like a real sandbox does; a new ProcessRuntime over the
same ``state_dir`` finds it again by its pid file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from corral.agent.client import AgentClient
from corral.agent.wire import AGENT_FILE, agent_argv
from corral.domain import EgressPolicy, Limits, RuntimeState, SandboxSpec
from corral.domain.usage import Usage
from corral.errors import Conflict, CorralError, InvalidInput, NotFound, RuntimeFailure
from corral.ports import Agent
from corral.runtime.layout import valid_id
from corral.runtime.locks import Locks

START_TIMEOUT = 10.0
STOP_TIMEOUT = 2.0
HOME = "home"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ProcessRuntime:
    """The ``Runtime`` port without isolation (see the module docstring).

    ``create`` raises Conflict for an id that already has a directory and
    RuntimeFailure (after removing what it made) when the agent does not answer;
    ``destroy`` is idempotent; ids that are not sandbox ids are InvalidInput."""

    name = "process"

    def __init__(self, state_dir: Path, python: str = sys.executable) -> None:
        self.state_dir = Path(state_dir)
        self.python = python
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self.locks = Locks()  # shared with its snapshotter (process_snapshot.py)

    def _dir(self, sandbox_id: str) -> Path:
        if not valid_id(sandbox_id):
            raise InvalidInput(f"invalid sandbox id {sandbox_id!r}", field="id")
        return self.state_dir / sandbox_id

    async def create(self, spec: SandboxSpec) -> None:
        directory = self._dir(spec.id)
        async with self.locks.of(spec.id):
            self.state_dir.mkdir(parents=True, exist_ok=True)
            try:
                directory.mkdir()
            except FileExistsError:
                raise Conflict(f"sandbox {spec.id} already exists on this node") from None
            try:
                await self._start(spec, directory)
            except BaseException as exc:
                await self._teardown(spec.id, directory)
                if isinstance(exc, CorralError | OSError):
                    raise RuntimeFailure(f"sandbox {spec.id} did not start: {exc}") from exc
                raise

    async def _start(self, spec: SandboxSpec, directory: Path) -> None:
        home = directory / HOME
        home.mkdir(exist_ok=True)  # kept by a hibernated or forked sandbox
        env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": str(home), "LANG": "C.UTF-8"}
        env.update(spec.envs)
        socket_path = directory / "agent.sock"
        log = os.open(directory / "agent.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *agent_argv(self.python, str(AGENT_FILE), "--socket", str(socket_path)),
                env=env,
                cwd=home,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            os.close(log)
        self._procs[spec.id] = proc
        (directory / "agent.pid").write_text(f"{proc.pid}\n")
        client = AgentClient(socket_path, connect_timeout=1.0, op_timeout=2.0)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.returncode is not None:
                raise RuntimeFailure(f"agent exited with {proc.returncode}: {_tail(directory / 'agent.log')}")
            if socket_path.exists():
                try:
                    await client.ping()
                    return
                except CorralError:
                    if time.monotonic() > deadline:
                        raise
            elif time.monotonic() > deadline:
                raise RuntimeFailure(f"agent did not start within {START_TIMEOUT:g} s")
            await asyncio.sleep(0.002)

    async def freeze(self, sandbox_id: str) -> None:
        """SIGSTOP the agent's process group (its commands, unless they made groups of
        their own: no cgroup here) and wait until the agent is stopped. NotFound when the
        agent does not run; RuntimeFailure when it does not stop within STOP_TIMEOUT."""
        pid = self._signal_group(sandbox_id, signal.SIGSTOP)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _state(pid) not in ("T", None):
            if time.monotonic() > deadline:
                self._signal_group(sandbox_id, signal.SIGCONT)
                raise RuntimeFailure(f"the agent of {sandbox_id} did not stop")
            await asyncio.sleep(0.001)

    async def thaw(self, sandbox_id: str) -> None:
        """SIGCONT the agent's process group; a no-op when it does not run."""
        with contextlib.suppress(NotFound):
            self._signal_group(sandbox_id, signal.SIGCONT)

    def _signal_group(self, sandbox_id: str, signum: signal.Signals) -> int:
        """Send ``signum`` to the agent's process group; the agent's pid. NotFound."""
        pid = self._running_pid(sandbox_id) if self._dir(sandbox_id).exists() else None
        try:
            if pid is None:
                raise ProcessLookupError(sandbox_id)
            os.killpg(pid, signum)
        except ProcessLookupError:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node") from None
        return pid

    async def destroy(self, sandbox_id: str) -> None:
        directory = self._dir(sandbox_id)
        async with self.locks.of(sandbox_id):
            if directory.exists() or sandbox_id in self._procs:
                await self._teardown(sandbox_id, directory)

    async def discard(self, sandbox_id: str) -> None:
        """``destroy``: nothing here is worth finishing in the background."""
        await self.destroy(sandbox_id)

    async def settle(self, timeout: float = 30.0) -> bool:
        """True: ``discard`` leaves nothing running in the background."""
        return True

    async def hibernate(self, sandbox_id: str) -> int:
        """End the agent and its processes, keep ``home/`` (the sandbox's "disk") and
        return the bytes it occupies. NotFound without ``home/``; idempotent."""
        directory = self._dir(sandbox_id)
        async with self.locks.of(sandbox_id):
            if not (directory / HOME).is_dir():
                raise NotFound(f"sandbox {sandbox_id} has no disk on this node")
            await self._stop(sandbox_id, directory)
            return await asyncio.to_thread(tree_size, directory / HOME)

    async def resume(self, spec: SandboxSpec, *, forked: bool = False) -> None:
        """Start the agent of a sandbox whose ``home/`` is kept (a process sandbox has
        no hostname of its own: ``forked`` changes nothing). NotFound without
        ``home/``; RuntimeFailure with ``home/`` kept."""
        directory = self._dir(spec.id)
        async with self.locks.of(spec.id):
            if not (directory / HOME).is_dir():
                raise NotFound(f"sandbox {spec.id} has no disk on this node")
            await self._stop(spec.id, directory)
            try:
                await self._start(spec, directory)
            except BaseException as exc:
                await self._stop(spec.id, directory)
                if isinstance(exc, CorralError | OSError):
                    raise RuntimeFailure(f"sandbox {spec.id} did not start: {exc}") from exc
                raise

    async def _stop(self, sandbox_id: str, directory: Path) -> None:
        """End the agent and its processes, keep ``home/``. Idempotent."""
        await self._stop_agent(sandbox_id, directory)
        for name in ("agent.sock", "agent.pid"):
            (directory / name).unlink(missing_ok=True)

    async def _teardown(self, sandbox_id: str, directory: Path) -> None:
        """Ask the agent to shut down, kill what is left of it, remove the directory."""
        await self._stop_agent(sandbox_id, directory)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _stop_agent(self, sandbox_id: str, directory: Path) -> None:
        pid = self._running_pid(sandbox_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)  # a paused agent answers the shutdown
            with contextlib.suppress(CorralError):
                await AgentClient(directory / "agent.sock", connect_timeout=0.5, op_timeout=1.0).shutdown()
            if not await self._exited(sandbox_id, pid, STOP_TIMEOUT):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                await self._exited(sandbox_id, pid, STOP_TIMEOUT)
        self._procs.pop(sandbox_id, None)

    async def _exited(self, sandbox_id: str, pid: int, timeout: float) -> bool:
        proc = self._procs.get(sandbox_id)
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                return False
            return True
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _running_pid(self, sandbox_id: str) -> int | None:
        """The agent's pid while it runs; None once it has exited (or never ran)."""
        proc = self._procs.get(sandbox_id)
        if proc is not None:
            return proc.pid if proc.returncode is None else None
        directory = self.state_dir / sandbox_id
        try:
            pid = int((directory / "agent.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # the pid may have been reused since: it must still be this sandbox's agent
        if os.fsencode(directory / "agent.sock") not in cmdline or not _alive(pid):
            return None
        return pid

    async def state(self, sandbox_id: str) -> RuntimeState:
        directory = self._dir(sandbox_id)
        if not directory.exists():
            return RuntimeState.MISSING
        return RuntimeState.RUNNING if self._running_pid(sandbox_id) else RuntimeState.STOPPED

    async def list_ids(self) -> set[str]:
        try:
            entries = list(self.state_dir.iterdir())
        except FileNotFoundError:
            return set()
        return {p.name for p in entries if p.is_dir() and valid_id(p.name)} | set(self._procs)

    async def reclaim(self, keep: set[str]) -> list[str]:
        removed = sorted(await self.list_ids() - keep)
        for sandbox_id in removed:
            await self.destroy(sandbox_id)
        return removed

    def agent(self, sandbox_id: str) -> Agent:
        return AgentClient(self._dir(sandbox_id) / "agent.sock")

    async def address(self, sandbox_id: str) -> str:
        """Servers in a process sandbox listen on the host itself."""
        if not self._dir(sandbox_id).exists():
            raise NotFound(f"sandbox {sandbox_id} is not on this node")
        return "127.0.0.1"

    async def set_egress(self, sandbox_id: str, policy: EgressPolicy) -> None:
        """Accepted and ignored: a process sandbox has the host's network."""
        if not self._dir(sandbox_id).exists():
            raise NotFound(f"sandbox {sandbox_id} is not on this node")

    async def set_limits(self, sandbox_id: str, limits: Limits) -> None:
        """Accepted and ignored: a process sandbox has no limits."""
        if not self._dir(sandbox_id).exists():
            raise NotFound(f"sandbox {sandbox_id} is not on this node")

    async def usage(self, sandbox_id: str) -> Usage:
        """As best a process can say: the CPU time of the agent and of the commands it
        has reaped (``/proc/<pid>/stat``); no limit is enforced here, so none is hit.
        NotFound when the agent is not running."""
        pid = self._running_pid(sandbox_id)
        if pid is None:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node")
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError as exc:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node") from exc
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        return Usage(cpu_seconds=ticks / os.sysconf("SC_CLK_TCK"))

    async def health(self) -> dict[str, object]:
        return {"runtime": "process", "ok": True}


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    return _state(pid) not in ("Z", None)


def _state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (R, S, T, Z, ...); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[0]


def tree_size(root: Path) -> int:
    """Bytes the regular files under ``root`` occupy (links not followed)."""
    total = 0
    for current, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(current, name)).st_blocks * 512
            except FileNotFoundError:
                continue
    return total


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_bytes()[-size:].decode(errors="replace")
    except OSError:
        return ""
