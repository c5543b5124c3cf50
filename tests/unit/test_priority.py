"""Background work steps aside for creates (corral/priority.py)."""

from __future__ import annotations

import asyncio
import threading
import time

from corral import priority


async def test_quiet_returns_at_once_when_nothing_is_served() -> None:
    started = time.monotonic()
    await priority.quiet(5.0)
    assert time.monotonic() - started < 0.5


async def test_quiet_returns_when_the_last_create_ends_not_at_its_limit() -> None:
    async def background() -> float:
        await priority.quiet(30.0)
        return time.monotonic()

    with priority.serving():
        with priority.serving():
            waiter = asyncio.ensure_future(background())
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        assert not waiter.done()  # one create still in progress
    left_at = time.monotonic()
    returned_at = await asyncio.wait_for(waiter, 5.0)
    assert returned_at - left_at < 0.5
    assert priority._waiters == set()


async def test_quiet_gives_up_after_its_limit() -> None:
    with priority.serving():
        started = time.monotonic()
        await priority.quiet(0.1)
        assert 0.09 <= time.monotonic() - started < 2.0
    assert priority._waiters == set()


async def test_a_waiter_on_another_event_loop_is_woken_too() -> None:
    waited: list[float] = []
    ready = threading.Event()

    def other_loop() -> None:
        async def wait() -> None:
            ready.set()
            await priority.quiet(30.0)
            waited.append(time.monotonic())

        asyncio.run(wait())

    with priority.serving():
        thread = threading.Thread(target=other_loop)
        thread.start()
        await asyncio.to_thread(ready.wait, 5)
        await asyncio.sleep(0.05)
        assert waited == []
    left_at = time.monotonic()
    await asyncio.to_thread(thread.join, 5)
    assert waited and waited[0] - left_at < 0.5
