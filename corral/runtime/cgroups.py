"""Find, read and remove the cgroup directories of sandboxes (``<hierarchy>/corral/<id>``).

runc creates and removes them itself; this module is for what is left after a crash
or a failed create, and for what the kernel counted of a sandbox (:func:`usage`). It
knows both layouts: cgroup v1 (and hybrid), where every controller hierarchy under
/sys/fs/cgroup has its own ``corral/<id>``, and v2, where there is one
``/sys/fs/cgroup/corral/<id>``. Blocking; use ``asyncio.to_thread`` (:func:`usage`
reads a few kernel files and does not block: it may run on the event loop).

The paths are the host's: cgroupfs holds no symlinks, a sandbox's own view of it is
mounted read-only in its cgroup namespace, and :func:`usage` opens only the kernel's
control files directly in ``corral/<id>`` (``O_NOFOLLOW``), never a name a sandbox chose.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from corral.domain.usage import Usage

ROOT = Path("/sys/fs/cgroup")


def _hierarchies(root: Path) -> list[Path]:
    if (root / "cgroup.controllers").exists():  # pure v2
        return [root]
    found = []
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return []
    for entry in entries:
        # cpu,cpuacct style names appear twice as symlinks; visit real dirs only.
        if entry.is_dir(follow_symlinks=False):
            found.append(Path(entry.path))
    return found


def names(parent: str, root: Path = ROOT) -> set[str]:
    """Names of the dirs under ``<hierarchy>/<parent>``, in any hierarchy."""
    found: set[str] = set()
    for hierarchy in _hierarchies(root):
        try:
            found.update(e.name for e in os.scandir(hierarchy / parent) if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def dirs(parent: str, sandbox_id: str, root: Path = ROOT) -> list[Path]:
    """Existing cgroup dirs of one sandbox, one per hierarchy."""
    return [h / parent / sandbox_id for h in _hierarchies(root) if (h / parent / sandbox_id).is_dir()]


# The control files usage() reads, v1 names first (a hybrid layout has both).
_USAGE_FILES = (
    "cpuacct.usage",  # v1: nanoseconds
    "cpu.stat",  # v2: usage_usec
    "memory.oom_control",  # v1: oom_kill
    "memory.events",  # v2: oom_kill
    "pids.events",  # v1 and v2: max (forks refused)
    "memory.max_usage_in_bytes",  # v1
    "memory.peak",  # v2 (Linux 5.19 and later)
    "memory.usage_in_bytes",  # v1: now
    "memory.current",  # v2: now
)


def usage(parent: str, sandbox_id: str, root: Path = ROOT) -> Usage | None:
    """What the kernel counted of the sandbox (CPU time, OOM kills, forks refused at
    its pids limit, peak and current memory), or None when it has no cgroup. A counter that the
    kernel does not keep in this layout reads 0 (the peak None)."""
    found: dict[str, str] = {}
    directories = dirs(parent, sandbox_id, root)
    for directory in directories:
        for name in _USAGE_FILES:
            if name not in found:
                text = _read(directory / name)
                if text is not None:
                    found[name] = text
    if not directories:
        return None
    if "cpuacct.usage" in found:
        cpu = int(found["cpuacct.usage"]) / 1e9
    else:
        cpu = _keyed(found.get("cpu.stat", "")).get("usage_usec", 0) / 1e6
    memory = found.get("memory.oom_control") or found.get("memory.events", "")
    peak = found.get("memory.max_usage_in_bytes") or found.get("memory.peak")
    now = found.get("memory.usage_in_bytes") or found.get("memory.current")
    return Usage(
        cpu_seconds=cpu,
        oom_kills=_keyed(memory).get("oom_kill", 0),
        pids_refused=_keyed(found.get("pids.events", "")).get("max", 0),
        memory_peak_bytes=int(peak) if peak else None,
        memory_bytes=int(now) if now else None,
    )


def _read(path: Path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # ELOOP: a link
            return None
        raise
    try:
        return os.read(fd, 65536).decode("ascii", "replace").strip()
    finally:
        os.close(fd)


def _keyed(text: str) -> dict[str, int]:
    """``key value`` lines (``cpu.stat``, ``memory.events``, ...) as numbers."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def stale_ids(parent: str, min_age: float, root: Path = ROOT) -> set[str]:
    """Names under ``<hierarchy>/<parent>`` whose dirs hold no process in any
    hierarchy and were last changed ``min_age`` seconds ago or more: cgroups no
    container is using or about to use (runc fills a new one within milliseconds)."""
    found: dict[str, bool] = {}
    now = time.time()
    for hierarchy in _hierarchies(root):
        try:
            entries = [e for e in os.scandir(hierarchy / parent) if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                idle = now - entry.stat(follow_symlinks=False).st_mtime >= min_age
            except FileNotFoundError:
                continue
            found[entry.name] = found.get(entry.name, True) and idle and not _procs(Path(entry.path))
    return {name for name, stale in found.items() if stale}


def _procs(directory: Path) -> list[int]:
    pids: list[int] = []
    for current, _subdirs, files in os.walk(directory):
        if "cgroup.procs" in files:
            try:
                text = (Path(current) / "cgroup.procs").read_text()
            except OSError:
                continue
            pids.extend(int(line) for line in text.split())
    return pids


def kill(parent: str, sandbox_id: str, root: Path = ROOT) -> int:
    """SIGKILL every process in the sandbox's cgroup dirs (children included); how many."""
    killed = 0
    for directory in dirs(parent, sandbox_id, root):
        for pid in _procs(directory):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def remove(parent: str, sandbox_id: str, root: Path = ROOT, timeout: float = 5.0) -> None:
    """Remove the sandbox's cgroup dirs in every hierarchy (children first). Processes
    still inside are killed first. Idempotent. Raises OSError if a dir stays busy."""
    for directory in dirs(parent, sandbox_id, root):
        deadline = time.monotonic() + timeout
        while True:
            for pid in _procs(directory):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                _rmdir_tree(directory)
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)


def _rmdir_tree(directory: Path) -> None:
    # cgroupfs dirs hold only control files, which rmdir removes with the dir itself.
    for current, subdirs, _files in os.walk(directory, topdown=False):
        for name in subdirs:
            _rmdir(Path(current) / name)
    _rmdir(directory)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
