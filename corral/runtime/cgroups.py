"""Find and remove the cgroup directories of sandboxes (``<hierarchy>/corral/<id>``).

runc creates and removes them itself; this module is for what is left after a crash
or a failed create. It knows both layouts: cgroup v1 (and hybrid), where every
controller hierarchy under /sys/fs/cgroup has its own ``corral/<id>``, and v2, where
there is one ``/sys/fs/cgroup/corral/<id>``. Blocking; use ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

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
