"""The runc command line (or any OCI runtime binary that speaks it: runsc, crun).

Every call is a subprocess (``spawn.capture``) with a deadline. Failures raise RuntimeFailure
carrying runc's own message; "does not exist" is reported as a value (None, False),
not an error, because callers use it to make their own operations idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.dedicated import on_own_thread
from corral.errors import RuntimeFailure
from corral.runtime import mounts
from corral.spawn import capture, spawn, start

_MISSING = ("does not exist", "not exist", "not found")


VERSION_TTL_S = 2.0  # how long a --version answer is kept


class RuncBinary:
    """``<binary> --root <root> ...``; state lives under ``root`` (a tmpfs: /run)."""

    def __init__(self, binary: str, root: Path, *, timeout: float = 30.0) -> None:
        self.binary = binary
        self.root = root
        self.timeout = timeout
        self._version: tuple[float, str | RuntimeFailure] | None = None  # (when, answer)
        self._version_lock = asyncio.Lock()

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _call(self, *args: str, root: bool = True) -> tuple[int, str, str]:
        argv = self._argv(*args) if root else [self.binary, *args]
        try:
            code, out, err = await capture(argv, timeout=self.timeout)
        except OSError as exc:
            raise RuntimeFailure(f"cannot run {self.binary}: {exc}") from exc
        except TimeoutError as exc:
            raise RuntimeFailure(f"{self.binary} {args[0]} did not finish within {self.timeout} s") from exc
        return code, out.decode(errors="replace"), err.decode(errors="replace").strip()

    async def run(
        self,
        sandbox_id: str,
        bundle: Path,
        *,
        listen_fd: int,
        log_fd: int,
        log_file: Path,
        pid_file: Path,
        nofile: tuple[int, int] | None = None,
        netns: str | None = None,
        launch: Callable[[], object] | None = None,
    ) -> None:
        """``run --detach``: create and start the container with ``listen_fd`` as its fd
        3 and ``log_fd`` as stdout/stderr, in a new session (so it survives us and our
        terminal). Returns once its init has been started. RuntimeFailure otherwise.
        With ``nofile`` (soft, hard) runc runs under that RLIMIT_NOFILE (``prlimit``), and
        with ``netns`` in that network namespace (started by a thread that joined it, see
        ``_run_entered``: no ``nsenter`` process): a container inherits both
        (``bundle.oci_config``, ``userns_path``). When ours is ``nofile`` already, runc
        inherits it from us: no ``prlimit`` process. With ``launch``, the starting
        thread calls it first (``launchns.LaunchNamespace.enter``: the mount namespace
        runc starts from); an error from it fails the run."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [
            self.binary,
            "--root",
            str(self.root),
            "--log",
            str(log_file),
            "--log-format",
            "json",
            "run",
            "--detach",
            "--no-new-keyring",
            "--preserve-fds",
            "1",
            "--pid-file",
            str(pid_file),
            "--bundle",
            str(bundle),
            sandbox_id,
        ]
        if nofile is not None and resource.getrlimit(resource.RLIMIT_NOFILE) != nofile:
            argv = ["prlimit", f"--nofile={nofile[0]}:{nofile[1]}", "--", *argv]
        fds = {1: log_fd, 2: log_fd, 3: listen_fd}
        try:
            if netns is None and launch is None:
                status = await spawn(argv, fds=fds, timeout=self.timeout)
            else:
                timeout = self.timeout
                status = await on_own_thread(lambda: _run_entered(argv, fds, netns, launch, timeout))
        except (OSError, TimeoutError) as exc:
            raise RuntimeFailure(f"{self.binary} run {sandbox_id}: {exc!r}") from exc
        if status != 0:
            raise RuntimeFailure(f"{self.binary} run {sandbox_id} exited {status}: {_last_error(log_file)}")

    async def state(self, sandbox_id: str) -> dict[str, Any] | None:
        """The container's state document, or None if runc does not know it."""
        code, out, err = await self._call("state", sandbox_id)
        if code != 0:
            if any(marker in err for marker in _MISSING):
                return None
            raise RuntimeFailure(f"{self.binary} state {sandbox_id}: {err}")
        try:
            state = json.loads(out)
        except ValueError as exc:
            raise RuntimeFailure(f"{self.binary} state {sandbox_id}: bad JSON") from exc
        return state if isinstance(state, dict) else None

    def status_from_file(self, sandbox_id: str) -> str | None:
        """The container's status as ``runc state`` would report it ("running",
        "created", "stopped"; a frozen one counts as "running"), read from runc's own
        state file (``<root>/<id>/state.json``) and the init's ``/proc/<pid>/stat``
        instead of a ``runc`` process: what a start-up reconcile of a thousand sandboxes
        asks for each. None when runc has no state for the id. Blocking (a file read).
        ValueError when the file is not runc's (another OCI runtime's layout, a format
        this does not know): ask ``state`` then."""
        directory = self.root / sandbox_id
        try:
            with open(directory / "state.json", "rb") as f:
                document = json.load(f)
        except FileNotFoundError:
            return None  # ``runc state`` too: "does not exist"
        except OSError as exc:
            raise ValueError(f"cannot read the state of {sandbox_id}: {exc}") from exc
        pid, started = document.get("init_process_pid"), document.get("init_process_start")
        if not isinstance(pid, int) or not isinstance(started, int):
            raise ValueError(f"state of {sandbox_id} has no init pid and start time")  # noqa: TRY004 - a format, not a type
        if pid <= 0 or _start_time(pid) != started:
            return "stopped"  # runc's own test: the pid alive, started when the init was
        return "created" if (directory / "exec.fifo").exists() else "running"

    async def list(self) -> list[dict[str, Any]]:
        """Every container under our root (empty when the root does not exist yet)."""
        if not self.root.exists():
            return []
        code, out, err = await self._call("list", "--format", "json")
        if code != 0:
            raise RuntimeFailure(f"{self.binary} list: {err}")
        try:
            items = json.loads(out or "null") or []
        except ValueError as exc:
            raise RuntimeFailure(f"{self.binary} list: bad JSON") from exc
        return [item for item in items if isinstance(item, dict)]

    async def kill(self, sandbox_id: str, signal: str = "KILL") -> bool:
        """Signal the container's init; False if the container or its init is gone."""
        code, _, err = await self._call("kill", sandbox_id, signal)
        if code == 0:
            return True
        if any(marker in err for marker in (*_MISSING, "not running", "process already finished")):
            return False
        raise RuntimeFailure(f"{self.binary} kill {sandbox_id}: {err}")

    async def delete(self, sandbox_id: str, *, force: bool = False) -> bool:
        """Delete the container (its state and cgroups); False if it did not exist.
        ``force`` also kills a running one (runc then polls every 100 ms, so prefer
        kill, wait, delete)."""
        args = ("delete", "--force", sandbox_id) if force else ("delete", sandbox_id)
        code, _, err = await self._call(*args)
        if code == 0:
            return True
        if any(marker in err for marker in _MISSING):
            return False
        raise RuntimeFailure(f"{self.binary} delete {sandbox_id}: {err}")

    async def update(self, sandbox_id: str, resources: dict[str, Any]) -> None:
        """``update``: the container's cgroups get ``resources`` (``bundle.resources``'s
        memory, cpu and pids) at once. RuntimeFailure if runc refuses (NotFound-like
        errors included: the caller holds the sandbox's lock)."""
        memory, cpu = resources["memory"], resources["cpu"]
        code, _, err = await self._call(
            "update",
            f"--memory={memory['limit']}",
            f"--memory-swap={memory['swap']}",
            f"--cpu-quota={cpu['quota']}",
            f"--cpu-period={cpu['period']}",
            f"--pids-limit={resources['pids']['limit']}",
            sandbox_id,
        )
        if code != 0:
            raise RuntimeFailure(f"{self.binary} update {sandbox_id}: {err}")

    async def version(self) -> str:
        """First line of ``--version``; RuntimeFailure if it does not run. The answer
        (either) is kept ``VERSION_TTL_S`` and asked once however many callers wait: the
        health check, which anyone may call, starts no process per request."""
        async with self._version_lock:
            now = time.monotonic()
            if self._version is None or now - self._version[0] >= VERSION_TTL_S:
                try:
                    code, out, err = await self._call("--version", root=False)
                    answer: str | RuntimeFailure = (
                        (out.splitlines()[0] if out else "")
                        if code == 0
                        else RuntimeFailure(f"{self.binary} --version: {err}")
                    )
                except RuntimeFailure as exc:
                    answer = exc
                self._version = (time.monotonic(), answer)
            answer = self._version[1]
        if isinstance(answer, RuntimeFailure):
            raise RuntimeFailure(answer.message)
        return answer


def _run_entered(
    argv: list[str],
    fds: dict[int, int],
    netns: str | None,
    launch: Callable[[], object] | None,
    timeout: float,
) -> int:
    """On a short-lived thread of its own (``corral.dedicated``): call ``launch``, join
    the network namespace at ``netns`` (a thread's namespaces are its own; the process
    it starts inherits them), start ``argv`` in its own session (``corral.spawn.start``)
    and wait for it; the thread then ends, so no thread of ours stays in a namespace.
    Its exit status; TimeoutError after ``timeout`` seconds (it is killed and reaped
    first). As with ``spawn``, a cancel does not interrupt the program: it is waited
    for, then CancelledError."""
    if launch is not None:
        launch()
    if netns is not None:
        mounts.join_netns(netns)
    pid = start(argv, fds=fds, new_session=True)
    pidfd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise TimeoutError(f"{argv[0]} did not finish within {timeout} s")
    finally:
        os.close(pidfd)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/<pid>/stat`` (clock ticks since boot), None for a process
    that is gone or a zombie (what runc counts as stopped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _last_error(log_file: Path) -> str:
    """The last error runc logged (its log is JSON lines), for messages."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return "(no runc log)"
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            return str(entry.get("msg", ""))[:2000]
    return (lines[-1] if lines else "(empty runc log)")[:2000]
