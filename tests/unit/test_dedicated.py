"""Work on a thread of its own (corral/dedicated.py)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from corral.dedicated import on_own_thread


async def test_the_work_runs_on_a_new_thread_that_ends_with_it() -> None:
    seen: list[int] = []

    def work() -> int:
        seen.append(threading.get_native_id())
        return 42

    pooled = await asyncio.to_thread(threading.get_native_id)
    assert await on_own_thread(work) == 42
    assert await on_own_thread(work) == 42
    first, second = seen
    assert len({first, second, pooled, threading.get_native_id()}) == 4
    for tid in seen:  # each ends right after handing its result over
        for _ in range(200):
            if not Path(f"/proc/self/task/{tid}").exists():
                break
            await asyncio.sleep(0.01)
        assert not Path(f"/proc/self/task/{tid}").exists()


async def test_an_error_of_the_work_is_raised_to_the_caller() -> None:
    def work() -> None:
        raise OSError(2, "gone")

    with pytest.raises(OSError, match="gone"):
        await on_own_thread(work)


async def test_a_cancel_is_raised_once_the_work_has_ended() -> None:
    started, release = threading.Event(), threading.Event()
    ended: list[bool] = []

    def work() -> None:
        started.set()
        release.wait(10)
        ended.append(True)
        raise OSError("dropped")  # dropped at a cancel: the caller undoes what was made

    task = asyncio.ensure_future(on_own_thread(work))
    await asyncio.to_thread(started.wait, 10)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the work, not returned at the cancel
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ended == [True]
