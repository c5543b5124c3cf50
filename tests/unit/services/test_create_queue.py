"""The create queue (corral/services/create_queue.py): a bounded number of creates at
once, orgs taking turns for the rest, a full queue refused with a retry time."""

from __future__ import annotations

import asyncio

import pytest

from corral.errors import Busy
from corral.services.create_queue import CreateQueue
from tests.support.conditions import eventually_async


class Held:
    """Turns taken and held until released, in the order they were granted."""

    def __init__(self, queue: CreateQueue) -> None:
        self.queue = queue
        self.granted: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, org: str, name: str) -> None:
        self.release[name] = asyncio.Event()

        async def run() -> None:
            async with self.queue.turn(org):
                self.granted.append(name)
                await self.release[name].wait()

        self.tasks[name] = asyncio.create_task(run())

    async def settle(self) -> None:
        for _ in range(5):  # a grant reaches its task within a few loop turns
            await asyncio.sleep(0)

    async def finish(self, name: str) -> None:
        self.release[name].set()
        await self.tasks[name]
        await self.settle()


async def test_one_orgs_burst_does_not_starve_anothers_single_create() -> None:
    held = Held(CreateQueue(concurrency=2, max_waiting=100))
    for n in range(10):
        held.start("burst", f"b{n}")
    await held.settle()
    held.start("single", "s")
    await held.settle()
    assert held.granted == ["b0", "b1"]  # two at once, the rest wait
    await held.finish("b0")
    assert held.granted[-1] == "s"  # the next turn is the other org's, not b2
    await held.finish("b1")
    assert held.granted[-1] == "b2"  # then the burst, in its own order
    for name in ["s", *(f"b{n}" for n in range(2, 10))]:
        await held.finish(name)
    assert held.granted == ["b0", "b1", "s", *(f"b{n}" for n in range(2, 10))]
    assert held.queue.running == 0 and held.queue.waiting == 0


async def test_a_full_queue_is_busy_with_a_retry_time_and_starts_nothing() -> None:
    queue = CreateQueue(concurrency=1, max_waiting=2)
    held = Held(queue)
    for name in ("a", "b", "c"):
        held.start("org", name)
    await held.settle()
    with pytest.raises(Busy, match="max_queued_creates") as refused:
        async with queue.turn("other"):
            raise AssertionError("a refused create must not run")
    assert refused.value.retry_after_s >= 1
    assert queue.waiting == 2 and queue.running == 1
    for name in ("a", "b", "c"):
        await held.finish(name)
    assert held.granted == ["a", "b", "c"] and queue.running == 0


async def test_a_cancelled_waiter_leaves_and_a_turn_handed_to_it_passes_on() -> None:
    queue = CreateQueue(concurrency=1, max_waiting=10)
    held = Held(queue)
    for name in ("a", "b", "c"):
        held.start("org", name)
    await held.settle()
    held.tasks["b"].cancel()  # its client went away while it waited
    await held.settle()
    assert queue.waiting == 1
    held.release["a"].set()
    while not held.tasks["a"].done():  # its turn, ending, was handed to c ...
        await asyncio.sleep(0)
    held.tasks["c"].cancel()  # ... cancelled before it ran
    await held.settle()
    assert held.granted == ["a"] and queue.running == 0 and queue.waiting == 0


async def test_no_bound_means_no_queue() -> None:
    queue = CreateQueue(concurrency=0, max_waiting=0)
    async with queue.turn("org"), queue.turn("org"):
        assert queue.waiting == 0


async def test_a_turn_held_past_max_hold_lets_the_next_one_in() -> None:
    held = Held(CreateQueue(concurrency=1, max_waiting=10, max_hold_s=0.05))
    held.start("org", "long")
    held.start("org", "next")
    await held.settle()
    assert held.granted == ["long"]
    await eventually_async(lambda: held.granted == ["long", "next"], 10, "the long turn was never let go")
    await held.finish("long")  # its block ending does not release a second time
    await held.finish("next")
    assert held.queue.running == 0 and held.queue.waiting == 0  # not -1
