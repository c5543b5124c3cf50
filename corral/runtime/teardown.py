"""Killing a sandbox's init without asking runc, and finishing teardowns in the
background.

:func:`kill_init` sends SIGKILL to the container's init through a pidfd opened from
the pid file runc wrote at create (``init.pid``) and waits on that pidfd: the init is
the pid namespace's first process, so once it has exited every other process of the
sandbox is dead too (the kernel kills and reaps them before the init's exit
completes). A pid file can outlive its process and the pid be reused, so the pid is
trusted only while it is in the sandbox's own cgroup (``/<parent>/<id>``); the pidfd,
opened before that check, keeps naming the checked process, so the signal cannot reach
another one (when the check fails, runc is asked as before). A frozen sandbox (a checkpoint in progress) is thawed after the signal:
frozen tasks would not die. This replaces ``runc state`` + ``runc kill`` (two Go
process start-ups) on every kill.

:class:`Teardowns` runs the rest of a teardown (``runc delete``, network, unmounts, loop
device, cgroups, the sandbox dir) in background tasks, at most ``concurrency`` at once,
each holding the sandbox's lock until it is done, so nothing else (a ``destroy``, a
snapshot, a ``reclaim``) can act on the sandbox in the meantime. Each start, end and
failure is logged; a failure leaves traces that ``reclaim`` removes at the next start-up
(the same holds if the process dies in between).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from corral.errors import RuntimeFailure
from corral.runtime.blocking import finish_owning
from corral.runtime.freeze import thaw_cgroup
from corral.runtime.runcbin import RuncBinary
from corral.spawn import wait_readable

log = logging.getLogger("corral.runtime")

KILL_WAIT_S = 10.0


async def kill_init(pid_file: Path, parent: str, sandbox_id: str) -> bool | None:
    """SIGKILL the sandbox's init and wait for it. True once it is dead (or was
    already: no such process); None when that cannot be told without runc (no pid
    file, or its pid is not in the sandbox's cgroup: reused, or a layout this does not
    know). TimeoutError if it outlives the signal for ``KILL_WAIT_S``."""
    pidfd = await finish_owning(_close_pidfd, _signal_init, pid_file, parent, sandbox_id)
    if pidfd is None or isinstance(pidfd, bool):
        return pidfd
    try:
        await wait_readable(pidfd, KILL_WAIT_S)
    finally:
        os.close(pidfd)
    return True


def _close_pidfd(signalled: int | bool | None) -> None:
    """Close what ``_signal_init`` returned to a kill cancelled meanwhile."""
    if signalled is not None and not isinstance(signalled, bool):
        os.close(signalled)


def _signal_init(pid_file: Path, parent: str, sandbox_id: str) -> int | bool | None:
    """A pidfd of the init, already sent SIGKILL; True if it is gone already; None
    when it cannot be told (blocking: file reads and one cgroupfs write)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if pid <= 1:
        return None
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not _in_cgroup(pid, f"/{parent}/{sandbox_id}"):
            os.close(pidfd)
            return None
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        os.close(pidfd)
        return True
    except BaseException:
        os.close(pidfd)
        raise
    thaw_cgroup(parent, sandbox_id)
    return pidfd


def init_pidfd(pid_file: Path, parent: str, sandbox_id: str) -> int | None:
    """A pidfd of the sandbox's init (the caller closes it): the process its pid file
    names, if it is in the sandbox's cgroup (not a reused pid); None otherwise.
    Blocking (file reads)."""
    try:
        pid = int(pid_file.read_text().strip())
        pidfd = os.pidfd_open(pid)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    if pid > 1 and _in_cgroup(pid, f"/{parent}/{sandbox_id}"):
        return pidfd  # checked after it was opened: the pidfd is that process's
    os.close(pidfd)
    return None


def _in_cgroup(pid: int, suffix: str) -> bool:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return any(line.rsplit(":", 1)[-1] == suffix for line in lines)


async def stop_container(runc: RuncBinary, pid_file: Path, parent: str, sandbox_id: str) -> None:
    """Kill the init (:func:`kill_init`, or through ``runc kill`` when the pid file
    cannot be trusted), wait for its pid namespace to empty, delete the container.
    Idempotent; RuntimeFailure from runc."""
    try:
        dead = await kill_init(pid_file, parent, sandbox_id)
    except TimeoutError:
        log.warning("init of %s outlived SIGKILL for %g s; forcing the delete", sandbox_id, KILL_WAIT_S)
        dead = None
    if dead:
        with contextlib.suppress(RuntimeFailure):  # else: a state dir runc cannot load
            await runc.delete(sandbox_id)
            return
    state = await runc.state(sandbox_id)
    if state is None:
        # A runc killed halfway through "run" leaves a state dir runc cannot load.
        await asyncio.to_thread(shutil.rmtree, runc.root / sandbox_id, True)
        return
    pid = state.get("pid")
    if state.get("status") == "running" and isinstance(pid, int) and pid > 0:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            pidfd = None
        try:
            await runc.kill(sandbox_id, "KILL")
            if pidfd is not None:
                await wait_readable(pidfd, KILL_WAIT_S)
        except TimeoutError:
            log.warning("init of %s outlived SIGKILL for %g s; forcing the delete", sandbox_id, KILL_WAIT_S)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    try:
        await runc.delete(sandbox_id)
    except RuntimeFailure:
        await runc.delete(sandbox_id, force=True)  # paused, or not dead yet


class Teardowns:
    """Background teardowns of one runtime; see the module docstring."""

    def __init__(self, concurrency: int = 2) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start(self, sandbox_id: str, lock: asyncio.Lock, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` in the background; ``lock`` (acquired by the caller) is released
        when it ends, however it ends."""
        task = asyncio.get_running_loop().create_task(
            self._run(sandbox_id, lock, work), name=f"corral-teardown-{sandbox_id}"
        )
        self._tasks[sandbox_id] = task

    async def settle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every background teardown; False if some
        are still running (they go on)."""
        tasks = list(self._tasks.values())
        if not tasks:
            return True
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        return not pending

    async def _run(self, sandbox_id: str, lock: asyncio.Lock, work: Callable[[], Awaitable[None]]) -> None:
        try:
            async with self._slots:
                started = time.perf_counter()
                await work()
                log.info("teardown of %s finished in the background (%.0f ms)", sandbox_id, _ms(started))
        except Exception:
            log.exception(
                "background teardown of %s failed; reclaim finishes it at the next start", sandbox_id
            )
        finally:
            lock.release()
            with contextlib.suppress(KeyError):
                del self._tasks[sandbox_id]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000
