"""TreeWork: a bounded pool apart from the default one, a share per owner, a time limit."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from corral.errors import RuntimeFailure
from corral.runtime.treework import TreeWork
from tests.support.conditions import eventually_async


async def test_one_owner_gets_its_share_and_others_go_on() -> None:
    work = TreeWork(workers=3, per_owner=1, timeout_s=10)
    release = threading.Event()
    running: list[str] = []

    def stuck(name: str) -> str:
        running.append(name)
        release.wait(10)
        return name

    hogs = [asyncio.ensure_future(work.run("sb-hog", "stuck", stuck, f"hog{i}")) for i in range(5)]
    await eventually_async(lambda: running, 5)  # hog0 started
    assert running == ["hog0"] and work.busy("sb-hog") == 5  # one thread, four waiting
    started = time.monotonic()
    assert await work.run("sb-other", "quick", lambda: "done") == "done"
    assert time.monotonic() - started < 1
    release.set()
    assert await asyncio.gather(*hogs) == [f"hog{i}" for i in range(5)]
    assert work.busy("sb-hog") == 0


async def test_a_call_past_its_time_limit_fails_and_keeps_its_slot_until_it_ends() -> None:
    work = TreeWork(workers=2, per_owner=1, timeout_s=0.2)
    release = threading.Event()
    with pytest.raises(RuntimeFailure, match="stuck took longer than 0.2 s"):
        await work.run("sb-a", "stuck", release.wait, 10)
    assert work.busy("sb-a") == 1  # the thread still runs: the owner has no second one
    second = asyncio.ensure_future(work.run_for("sb-a", "next", 5, lambda: "next"))
    for _ in range(5):  # turns of the loop: a free slot would have taken it by now
        await asyncio.sleep(0)
    assert not second.done()
    release.set()
    assert await second == "next"


async def test_a_cancel_waits_for_the_thread() -> None:
    work = TreeWork(workers=1, per_owner=1, timeout_s=10)
    finished = threading.Event()

    began, proceed = threading.Event(), threading.Event()

    def slow() -> None:
        began.set()
        proceed.wait(10)
        finished.set()

    call = asyncio.ensure_future(work.run("sb-a", "slow", slow))
    await eventually_async(began.is_set, 5)
    call.cancel()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not call.done()  # the cancel waits for the thread
    proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert finished.is_set()
