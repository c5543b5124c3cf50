"""Work a client is waiting for, in progress in this process, and background work that
steps aside for it.

A sandbox's create is mostly kernel work that contends with other kernel work (mount
and namespace locks, RCU grace periods, the nftables commit lock) more than for CPU,
so the background work that follows a kill or a claim (unmounting, deleting a network
namespace and its rules, making a ready one) slows a create that runs at the same time
by more than it costs itself. The runtime marks its creates with :func:`serving`;
background work calls :func:`quiet` between its steps, which returns once no create is
in progress or after ``max_wait`` seconds (background work is delayed, never starved).

Process-wide on purpose (contention is the node's): a plain counter, and waiters of any
event loop woken through their own loop when it drops to zero (they polled it every 2
ms before, each waiter ~500 wake-ups a second for as long as creates went on: in a
burst of creates, CPU taken from the creates).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager

_serving = 0
_waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()


@contextmanager
def serving() -> Iterator[None]:
    """Mark foreground work for as long as the block runs."""
    global _serving
    _serving += 1
    try:
        yield
    finally:
        _serving -= 1
        if _serving == 0:
            _wake()


def busy() -> bool:
    return _serving > 0


async def quiet(max_wait: float) -> None:
    """Return once no foreground work is in progress, or after ``max_wait`` seconds."""
    deadline = time.monotonic() + max_wait
    loop = asyncio.get_running_loop()
    while _serving > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        woken: asyncio.Future[None] = loop.create_future()
        entry = (loop, woken)
        _waiters.add(entry)
        try:
            await asyncio.wait({woken}, timeout=left)
        finally:
            _waiters.discard(entry)
            woken.cancel()


def _wake() -> None:
    waiters = list(_waiters)
    _waiters.clear()
    for loop, woken in waiters:
        with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
            loop.call_soon_threadsafe(_resolve, woken)


def _resolve(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
