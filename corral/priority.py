"""Work a client is waiting for, in progress in this process, and background work that
steps aside for it.

A sandbox's create is mostly kernel work that contends with other kernel work (mount
and namespace locks, RCU grace periods, the nftables commit lock) more than for CPU,
so the background work that follows a kill or a claim (unmounting, deleting a network
namespace and its rules, making a ready one) slows a create that runs at the same time
by more than it costs itself. The runtime marks its creates with :func:`serving`;
background work calls :func:`quiet` between its steps, which returns once no create is
in progress or after ``max_wait`` seconds (background work is delayed, never starved).

Process-wide on purpose (contention is the node's), and a plain counter polled every
few milliseconds rather than an event bound to one event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager

POLL_S = 0.002
_serving = 0


@contextmanager
def serving() -> Iterator[None]:
    """Mark foreground work for as long as the block runs."""
    global _serving
    _serving += 1
    try:
        yield
    finally:
        _serving -= 1


def busy() -> bool:
    return _serving > 0


async def quiet(max_wait: float) -> None:
    """Return once no foreground work is in progress, or after ``max_wait`` seconds."""
    deadline = time.monotonic() + max_wait
    while _serving > 0 and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
