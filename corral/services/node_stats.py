"""The node at a glance, as numbers a client charts over time (the console's health
page): ``read(principal, metrics, store) -> NodeStats``.

Contracts: needs ``sandbox:read``; the figures are the node's (every org's), read from
this process's metrics (counters since it started: a client charts rates from the
difference of two reads) and from the host's ``/proc/meminfo``; a host without it
reports 0 for the host's memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.metrics import Metrics
from corral.ports import SandboxStore

MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True)
class NodeStats:
    at: float  # seconds since the epoch
    live_sandboxes: int
    creates: int  # since the process started
    create_seconds_sum: float  # the creates' durations, summed
    create_seconds_count: int
    memory_total_mb: int  # the host's
    memory_available_mb: int
    memory_promised_mb: int  # to the live sandboxes, by their limits


async def read(principal: Principal, metrics: Metrics, store: SandboxStore) -> NodeStats:
    """The node's figures now (see the module docstring)."""
    require(principal, Scope.SANDBOX_READ)
    value = metrics.registry.get_sample_value
    promised = (await store.holdings()).memory_mb
    total, available = host_memory_mb()
    return NodeStats(
        at=time.time(),
        live_sandboxes=int(value("xgen_sandboxes_active") or 0),
        creates=int(value("xgen_sandbox_create_total") or 0),
        create_seconds_sum=float(value("corral_sandbox_create_duration_seconds_sum") or 0.0),
        create_seconds_count=int(value("corral_sandbox_create_duration_seconds_count") or 0),
        memory_total_mb=total,
        memory_available_mb=available,
        memory_promised_mb=promised,
    )


def host_memory_mb(meminfo: Path = MEMINFO) -> tuple[int, int]:
    """MemTotal and MemAvailable of ``meminfo`` in MiB; (0, 0) where it cannot be read."""
    try:
        lines = meminfo.read_text().splitlines()
    except OSError:
        return 0, 0
    kib = {}
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kib[name] = int(fields[0])
    return kib.get("MemTotal", 0) // 1024, kib.get("MemAvailable", 0) // 1024
