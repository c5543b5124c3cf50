"""Hold a sandbox still while its disk is copied: the cgroup freezer stops its
processes, ``syncfs`` writes its filesystem's dirty pages and metadata through the loop
device into the image file; the processes are thawed afterwards.

Why this suffices: with every process of the sandbox frozen nothing writes to its
filesystem (the host writes there only through the sandbox's agent, frozen too, and
the disk is mounted ``noinit_itable``: no lazy-init thread), so once ``syncfs`` returns
the image file holds exactly what the sandbox sees, and the copy is one instant of it.
``FIFREEZE`` would give the same and costs 30-50 ms more here (it waits for RCU grace
periods); ``freeze_fs``/``thaw_fs`` remain for tools, and ``thaw_all`` undoes both.

A frozen cgroup blocks the agent, so ``thaw_all`` is cheap, idempotent and called at
start-up for every sandbox that is not paused: a crash between freeze and thaw leaves
nothing stuck. A paused sandbox (``RuncRuntime.freeze``) is frozen with the same
``freeze_cgroup`` and stays frozen: ``frozen`` leaves a cgroup frozen that it found so.
Blocking (a freeze waits for the tasks to stop, ``syncfs`` for the writes): use
``asyncio.to_thread``. Errors are ``OSError``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from corral.runtime.cgroups import ROOT

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878  # _IOWR('X', 120, int)
FREEZE_TIMEOUT_S = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syncfs.argtypes = [ctypes.c_int]


def _freezer(parent: str, sandbox_id: str, root: Path) -> tuple[Path, str, str, str] | None:
    """The control file of the sandbox's freezer and its frozen/thawed values, or None
    when the sandbox has no cgroup (it is not running)."""
    v2 = root / parent / sandbox_id / "cgroup.freeze"
    if v2.exists():
        return v2, "1", "0", "frozen 1"
    v1 = root / "freezer" / parent / sandbox_id / "freezer.state"
    if v1.exists():
        return v1, "FROZEN", "THAWED", "FROZEN"
    return None


def is_frozen(parent: str, sandbox_id: str, root: Path = ROOT) -> bool:
    """Whether the sandbox's cgroup is frozen (asked to be: a freeze in progress counts);
    False without a cgroup."""
    found = _freezer(parent, sandbox_id, root)
    if found is None:
        return False
    control, frozen, _thawed, _done = found
    try:
        return control.read_text().strip() in (frozen, "FREEZING")
    except FileNotFoundError:
        return False


def freeze_cgroup(parent: str, sandbox_id: str, root: Path = ROOT) -> bool:
    """Freeze every process of the sandbox and wait until they all are; False when it
    has no cgroup. Raises OSError (the cgroup is thawed again first)."""
    found = _freezer(parent, sandbox_id, root)
    if found is None:
        return False
    control, frozen, _thawed, done = found
    control.write_text(frozen)
    deadline = time.monotonic() + FREEZE_TIMEOUT_S
    state = control.parent / ("cgroup.events" if control.name == "cgroup.freeze" else "freezer.state")
    delay = 0.0002
    while done not in state.read_text():
        if time.monotonic() > deadline:
            thaw_cgroup(parent, sandbox_id, root)
            raise OSError(errno.ETIMEDOUT, "the sandbox's processes did not freeze", str(control))
        time.sleep(delay)
        delay = min(delay * 2, 0.01)
    return True


def thaw_cgroup(parent: str, sandbox_id: str, root: Path = ROOT) -> None:
    """Let the sandbox's processes run again; a no-op without a cgroup or when thawed."""
    found = _freezer(parent, sandbox_id, root)
    if found is not None:
        control, _frozen, thawed, _done = found
        with contextlib.suppress(FileNotFoundError):
            control.write_text(thawed)


def freeze_fs(mountpoint: Path) -> bool:
    """``FIFREEZE`` the filesystem mounted at ``mountpoint`` (flushes it); False when
    nothing is mounted there. Raises OSError."""
    if not os.path.ismount(mountpoint):
        return False
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    finally:
        os.close(fd)
    return True


def thaw_fs(mountpoint: Path) -> None:
    """``FITHAW``; a no-op when it is not frozen or nothing is mounted there."""
    if not os.path.ismount(mountpoint):
        return
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: it was not frozen
            raise
    finally:
        os.close(fd)


def sync_fs(mountpoint: Path) -> bool:
    """``syncfs`` the filesystem mounted at ``mountpoint``; False when nothing is
    mounted there. Raises OSError."""
    if not os.path.ismount(mountpoint):
        return False
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs: {os.strerror(code)}", str(mountpoint))
    finally:
        os.close(fd)
    return True


@contextlib.contextmanager
def frozen(parent: str, sandbox_id: str, mountpoint: Path, root: Path = ROOT) -> Iterator[None]:
    """The sandbox's processes frozen and its filesystem at ``mountpoint`` synced for
    the block; thawed on exit whatever happens, unless they were frozen before (paused)."""
    paused = is_frozen(parent, sandbox_id, root)
    froze = freeze_cgroup(parent, sandbox_id, root) and not paused
    try:
        sync_fs(mountpoint)
        yield
    finally:
        if froze:
            thaw_cgroup(parent, sandbox_id, root)


def thaw_all(parent: str, sandbox_id: str, mountpoint: Path, root: Path = ROOT) -> None:
    """Undo whatever ``frozen`` may have left behind (a crash in the middle)."""
    thaw_fs(mountpoint)
    thaw_cgroup(parent, sandbox_id, root)
