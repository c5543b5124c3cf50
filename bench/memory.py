"""Host-side memory accounting of running containers.

A container is found by the pid of its init process; its memory cgroup (v1 or v2)
gives every process in it. For each process we read ``/proc/<pid>/smaps_rollup``:
PSS shares pages mapped by several processes (e.g. the python3 binary of ten agents)
fairly among them, so the PSS sum over all containers, divided by their count, is
the honest "memory one more idle sandbox costs". We also keep the cgroup's own
counter (which charges page cache to whoever touched it first) and the host-wide
change of used memory (as free(1) counts it), which includes what the others miss:
kernel objects, growth of the control plane, and noise from anything else running.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _v1_controller_dir(controller: str) -> Path | None:
    path = CGROUP_ROOT / controller
    return path if (path / "cgroup.procs").exists() else None


def memory_cgroup_of(pid: int) -> Path | None:
    """The directory of ``pid``'s memory cgroup, or None if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    v1 = _v1_controller_dir("memory")
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if v1 is not None and "memory" in controllers.split(","):
            return v1 / rel.lstrip("/")
    if v1 is not None:
        return None
    for line in lines:
        hid, controllers, rel = line.split(":", 2)
        if hid == "0" and controllers == "":
            return CGROUP_ROOT / rel.lstrip("/")
    return None


def cgroup_pids(cgroup: Path) -> list[int]:
    """Every pid in ``cgroup`` and its descendants."""
    pids: list[int] = []
    for dirpath, _dirs, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            try:
                text = (Path(dirpath) / "cgroup.procs").read_text()
            except OSError:
                continue
            pids.extend(int(p) for p in text.split())
    return pids


def cgroup_usage(cgroup: Path) -> int:
    """The cgroup's charged memory in bytes (v1 usage_in_bytes, v2 memory.current)."""
    for name in ("memory.usage_in_bytes", "memory.current"):
        try:
            return int((cgroup / name).read_text())
        except (OSError, ValueError):
            continue
    return 0


@dataclass(frozen=True)
class ProcMemory:
    rss: int
    pss: int


def proc_memory(pid: int) -> ProcMemory | None:
    """RSS and PSS of one process in bytes, from smaps_rollup; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = pss = 0
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return ProcMemory(rss, pss)


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def host_used() -> int:
    """Memory in use on the host in bytes, as free(1) counts it: total less free, less
    buffers, page cache and reclaimable slab (so other processes' file I/O moves it
    less than MemAvailable would)."""
    fields: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0]) * 1024
    cached = fields["Buffers"] + fields["Cached"] + fields.get("SReclaimable", 0)
    return fields["MemTotal"] - fields["MemFree"] - cached


MEMINFO_FIELDS = (
    "AnonPages",
    "Shmem",
    "Buffers",
    "Cached",
    "Slab",
    "SUnreclaim",
    "KernelStack",
    "PageTables",
    "Percpu",
)


def meminfo() -> dict[str, int]:
    """The fields of /proc/meminfo that sandboxes move, in bytes."""
    fields: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in MEMINFO_FIELDS:
            fields[key] = int(rest.split()[0]) * 1024
    return fields


@dataclass(frozen=True)
class ContainerMemory:
    """Memory of one container: processes in its cgroup plus named host helpers."""

    processes: int
    rss: int
    pss: int
    cgroup_usage: int
    by_name: dict[str, int]  # PSS per process name, inside and helpers


def container_memory(init_pid: int, helper_pids: Iterable[int] = ()) -> ContainerMemory:
    """Account one container by its init pid; ``helper_pids`` are host processes that
    exist only for this container (podman's conmon) and are added to the sums."""
    cgroup = memory_cgroup_of(init_pid)
    pids = cgroup_pids(cgroup) if cgroup is not None else [init_pid]
    if init_pid not in pids:
        pids.append(init_pid)
    rss = pss = count = 0
    by_name: dict[str, int] = {}
    for pid in [*pids, *helper_pids]:
        mem = proc_memory(pid)
        if mem is None:
            continue
        count += 1
        rss += mem.rss
        pss += mem.pss
        name = proc_name(pid)
        by_name[name] = by_name.get(name, 0) + mem.pss
    usage = cgroup_usage(cgroup) if cgroup is not None else 0
    return ContainerMemory(count, rss, pss, usage, by_name)


@dataclass(frozen=True)
class MemoryReport:
    """Per-container averages over ``count`` idle containers, in bytes."""

    count: int
    pss: float
    rss: float
    cgroup_usage: float
    host_delta: float
    processes: float
    by_name: dict[str, float]
    control_plane_delta: float | None = None
    meminfo_delta: dict[str, float] | None = None

    @classmethod
    def average(
        cls,
        items: list[ContainerMemory],
        host_delta: int,
        control_plane_delta: int | None = None,
        meminfo_delta: dict[str, int] | None = None,
    ) -> MemoryReport:
        n = max(len(items), 1)
        names: dict[str, float] = {}
        for item in items:
            for name, value in item.by_name.items():
                names[name] = names.get(name, 0.0) + value / n
        return cls(
            count=len(items),
            pss=sum(i.pss for i in items) / n,
            rss=sum(i.rss for i in items) / n,
            cgroup_usage=sum(i.cgroup_usage for i in items) / n,
            host_delta=host_delta / n,
            processes=sum(i.processes for i in items) / n,
            by_name=names,
            control_plane_delta=None if control_plane_delta is None else control_plane_delta / n,
            meminfo_delta=None if meminfo_delta is None else {k: v / n for k, v in meminfo_delta.items()},
        )


def mib(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / (1024 * 1024):.1f}"
