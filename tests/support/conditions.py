"""Waiting for a condition that something else makes true (another process, a thread,
a background task: a server's health, a line in its log, a refresh): polled, with a
deadline, and returning as soon as it holds. Time that must pass for a service is a
``FakeClock``'s (``tests/support/clock.py``), never a sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from pathlib import Path


def eventually(
    predicate: Callable[[], object],
    timeout: float,
    message: str | Callable[[], str] = "",
    interval: float = 0.05,
) -> None:
    """Returns as soon as ``predicate()`` is truthy; raises AssertionError with
    ``message`` (or what it returns) once ``timeout`` seconds have passed. Exceptions of
    ``predicate`` propagate (raise one to give up early)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError((message() if callable(message) else message) or f"not true in {timeout}s")
        time.sleep(interval)


async def eventually_async(
    predicate: Callable[[], object],
    timeout: float,
    message: str | Callable[[], str] = "",
    interval: float = 0.02,
) -> None:
    """``eventually`` without blocking the loop; ``predicate`` may be a coroutine
    function (its result awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError((message() if callable(message) else message) or f"not true in {timeout}s")
        await asyncio.sleep(interval)


def pid_gone(pid: int, timeout: float = 3.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.02)
    return False
