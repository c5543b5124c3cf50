"""What this node may promise its sandboxes in total: MiB of disk and of memory.

A sandbox's ``diskMB`` is a sparse image that grows as it is written, and its
``memoryMB`` a cgroup limit, not a reservation; so nothing stops a node from promising
more than it has, and then every sandbox on it fails together when the promises are
called in. ``corral.services.admission`` refuses a create, fork, restore or wake that
would promise more than ``node_capacity`` says.

Defaults, when the settings say nothing:
- disk: the space free on the data dir's filesystem at start, plus what the sandbox
  disks already there hold (their promises are counted in full), minus
  ``disk_reserve_percent`` of the filesystem's size (templates, checkpoints, the store
  and the rest of the host live there too);
- memory: the host's memory times ``memory_overcommit`` (a sandbox rarely uses all of
  its limit; ``oomScoreAdj`` makes sandboxes die before the server if they do).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corral.domain import Capacity
from corral.settings import Settings

MIB = 1 << 20


def node_capacity(settings: Settings) -> Capacity:
    """The settings' totals, or the defaults of the module docstring."""
    disk = settings.max_promised_disk_mb
    if disk is None:
        disk = default_disk_mb(settings.data_dir, settings.disk_reserve_percent)
    memory = settings.max_promised_memory_mb
    if memory is None:
        memory = int(host_memory_mb() * settings.memory_overcommit)
    return Capacity(disk_mb=disk, memory_mb=memory)


def default_disk_mb(data_dir: Path, reserve_percent: float) -> int:
    fs = os.statvfs(data_dir)
    free = fs.f_bavail * fs.f_frsize
    reserve = fs.f_blocks * fs.f_frsize * reserve_percent / 100
    return max(1, int((free + _sandbox_disks_bytes(data_dir / "sandboxes") - reserve) // MIB))


def host_memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("no MemTotal in /proc/meminfo")


def _sandbox_disks_bytes(sandboxes: Path) -> int:
    """Bytes the sandboxes' disk images (``<id>/disk.img``, ``runtime/layout.py``) hold
    now: their allocated blocks. Links are not followed."""
    total = 0
    try:
        entries = list(os.scandir(sandboxes))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            found = os.lstat(os.path.join(entry.path, "disk.img"))
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(found.st_mode):
            total += found.st_blocks * 512
    return total
