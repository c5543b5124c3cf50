"""CPU-time quotas: a sandbox is stopped once its processes have used ``Limits.cpu_seconds``
seconds of CPU time in all.

The kernel has no such limit for a group of processes (``RLIMIT_CPU`` counts each
process alone: a workload that forks starts a fresh budget in every child), but it
counts a cgroup's CPU time (``cpuacct.usage``, v2 ``cpu.stat``). So the runtime watches
that counter from the host (:class:`CpuQuotas`, one task per sandbox with a quota) and,
once it reaches the quota, kills every process of the sandbox's cgroups: the init (the
agent) is one of them, and its death takes the whole pid namespace with it, so no fork
outruns the kill. The cgroups stay until the teardown: ``Runtime.usage`` still reads
the counter, at or past the quota (``Usage.cpu_exceeded``), and the sandbox's state is
STOPPED. The whole sandbox, not only the command that spun: killing some processes and
sparing others would race with the forks of the rest, and a sandbox that has used its
quota has nothing left to run on.

Timing, and what it costs: a sandbox cannot run on more than ``rate`` CPUs at once (its
CFS bandwidth, ``Limits.cpu_count``, or the host's CPUs if fewer), so after a reading
that leaves ``r`` seconds of quota nothing can be spent before ``r / rate`` seconds
have passed: the watcher sleeps that long, and never less than ``MIN_INTERVAL_S``. An
idle sandbox is read a few times in all, a spinning one every ``MIN_INTERVAL_S`` near
its end; it overshoots its quota by ``rate * MIN_INTERVAL_S`` CPU seconds at most (plus
the slack of one CFS period).

Where the quota lives: in the sandbox's OCI config (annotation :data:`ANNOTATION`,
written by the host into the bundle directory, outside the sandbox's root), from
which a restarted corral arms the watch again for every sandbox it keeps
(``RuncRuntime.reclaim``) and ``usage`` reports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from corral.domain.usage import Usage
from corral.runtime import cgroups

log = logging.getLogger("corral.runtime")

ANNOTATION = "corral.cpu_seconds"
MIN_INTERVAL_S = 0.02


def quota_of(config: Path) -> tuple[float, int] | None:
    """The quota the OCI config at ``config`` carries and the CPUs its CFS bandwidth
    allows (None: no quota, or no config)."""
    try:
        text = config.read_text()
    except FileNotFoundError:
        return None
    data = json.loads(text)
    value = data.get("annotations", {}).get(ANNOTATION)
    if value is None:
        return None
    cpu = data.get("linux", {}).get("resources", {}).get("cpu", {})
    return float(value), max(1, int(cpu.get("quota", 0)) // max(1, int(cpu.get("period", 1))))


class CpuQuotas:
    """The watches of one runtime's sandboxes. ``read`` gives a sandbox's usage (None
    once its cgroups are gone) and ``kill`` kills its processes; both are the
    runtime's (``cgroups.usage`` and ``cgroups.kill`` on the real ones)."""

    def __init__(self, read: Callable[[str], Usage | None], kill: Callable[[str], object]) -> None:
        self._read = read
        self._kill = kill
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def arm(self, sandbox_id: str, seconds: float, cpus: int) -> None:
        """Watch ``sandbox_id`` (replacing an earlier watch of the id)."""
        self.disarm(sandbox_id)
        rate = max(1, min(cpus, os.cpu_count() or cpus))
        task = asyncio.create_task(
            self._watch(sandbox_id, seconds, rate), name=f"corral-cpu-quota-{sandbox_id}"
        )
        self._tasks[sandbox_id] = task
        task.add_done_callback(self._ended)

    def disarm(self, sandbox_id: str) -> None:
        task = self._tasks.pop(sandbox_id, None)
        if task is not None:
            task.cancel()

    def watching(self, sandbox_id: str) -> bool:
        return sandbox_id in self._tasks

    def _ended(self, task: asyncio.Task[None]) -> None:
        for sandbox_id, watch in list(self._tasks.items()):
            if watch is task:
                del self._tasks[sandbox_id]

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self, sandbox_id: str, seconds: float, rate: int) -> None:
        while True:
            try:
                usage = self._read(sandbox_id)
            except (OSError, ValueError):
                log.exception("CPU quota of %s: cannot read its usage; the watch ends", sandbox_id)
                return
            if usage is None:
                return
            left = seconds - usage.cpu_seconds
            if left <= 0:
                killed = await asyncio.to_thread(self._kill, sandbox_id)
                log.info("CPU quota of %s (%g s) used: %s processes killed", sandbox_id, seconds, killed)
                return
            await asyncio.sleep(max(left / rate, MIN_INTERVAL_S))


def cgroup_quotas(parent: str, root: Path = cgroups.ROOT) -> CpuQuotas:
    """Watches over the sandboxes' cgroups under ``<hierarchy>/<parent>``."""
    return CpuQuotas(
        lambda sandbox_id: cgroups.usage(parent, sandbox_id, root),
        lambda sandbox_id: cgroups.kill(parent, sandbox_id, root),
    )
