"""finish and finish_owning: a cancel lands once the step's thread returned."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import pytest

from corral.runtime.blocking import finish, finish_owning


async def _cancel_midway(step: asyncio.Future[Any], started: threading.Event, go: threading.Event) -> None:
    while not started.is_set():
        await asyncio.sleep(0.001)
    step.cancel()
    await asyncio.sleep(0.01)
    assert not step.done()  # still waiting for the thread: the cancel is not raised yet
    go.set()
    with pytest.raises(asyncio.CancelledError):
        await step


async def test_a_cancel_waits_for_the_step_and_drops_its_result() -> None:
    started, go, returned = threading.Event(), threading.Event(), []

    def step() -> int:
        started.set()
        go.wait(5)
        returned.append(1)
        return 1

    await _cancel_midway(asyncio.ensure_future(finish(step)), started, go)
    assert returned == [1]


async def test_a_result_dropped_at_a_cancel_is_released() -> None:
    started, go, released = threading.Event(), threading.Event(), list[int]()

    def open_one() -> int:
        started.set()
        go.wait(5)
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def close(fd: int) -> None:
        released.append(fd)
        os.close(fd)

    await _cancel_midway(asyncio.ensure_future(finish_owning(close, open_one)), started, go)
    [fd] = released
    with pytest.raises(OSError):
        os.fstat(fd)  # closed, not leaked


async def test_an_uncancelled_result_is_the_callers() -> None:
    released: list[int] = []
    assert await finish_owning(released.append, lambda: 7) == 7
    assert released == []


async def test_a_step_that_failed_at_a_cancel_has_nothing_to_release() -> None:
    started, go, released = threading.Event(), threading.Event(), list[int]()

    def fails() -> int:
        started.set()
        go.wait(5)
        raise OSError("no")

    await _cancel_midway(asyncio.ensure_future(finish_owning(released.append, fails)), started, go)
    assert released == []
