"""How busy the whole machine is: its CPUs' busy time from /proc/stat, over a window or
since boot, and a wait for a quiet machine before a measurement."""

from __future__ import annotations

import asyncio
import os
import time


async def quiet(under: float, timeout: float, window: float = 0.5) -> str:
    """Wait until the machine spent under ``under`` of its CPUs over ``window`` s
    (e.g. the last burst's teardown, which the server finishes in the background, and
    the kernel's namespace cleanup are done), at most ``timeout`` s; what it waited."""
    began = time.monotonic()
    while True:
        share = await busy_share(window)
        waited = time.monotonic() - began
        if share < under or waited > timeout:
            return f"  quiet after {waited:.1f} s (the last {window} s {share:.0%} busy)"


async def busy_share(seconds: float) -> float:
    """The share of all the machine's CPUs that was busy over the next ``seconds``."""
    before, began = busy_cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    return (busy_cpu_seconds() - before) / ((time.monotonic() - began) * (os.cpu_count() or 1))


def busy_cpu_seconds() -> float:
    """CPU seconds every CPU of the machine spent not idle since boot (``/proc/stat``):
    the difference over a burst is what it cost the machine, its own processes, the
    kernel's work for them and anyone else's alike (the load says how quiet it was)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
