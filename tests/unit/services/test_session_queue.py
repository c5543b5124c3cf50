"""SessionQueue: ceilings per node and per org, first in first out, cancel-safe."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from corral.services.session_queue import SessionQueue


async def _enter(queue: SessionQueue, org: str, stack: AsyncExitStack, order: list[str], name: str) -> None:
    await stack.enter_async_context(queue.slot(org))
    order.append(name)


async def test_a_session_over_the_node_ceiling_waits_and_they_start_in_order() -> None:
    queue = SessionQueue(total=1)
    first = AsyncExitStack()
    await first.enter_async_context(queue.slot("org-a"))
    order: list[str] = []
    stacks = [AsyncExitStack() for _ in range(3)]
    waiters = [asyncio.create_task(_enter(queue, "org-b", s, order, f"w{i}")) for i, s in enumerate(stacks)]
    await asyncio.sleep(0)
    assert order == [] and queue.waiting == 3
    await first.aclose()
    await asyncio.sleep(0)
    assert order == ["w0"]
    for stack in stacks:
        await stack.aclose()
        await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == ["w0", "w1", "w2"]
    assert not queue.held


async def test_a_full_org_does_not_hold_up_another_org() -> None:
    queue = SessionQueue(total=0, per_org=1)
    held = AsyncExitStack()
    await held.enter_async_context(queue.slot("org-a"))
    order: list[str] = []
    second_a, first_b = AsyncExitStack(), AsyncExitStack()
    waiting_a = asyncio.create_task(_enter(queue, "org-a", second_a, order, "a2"))
    await asyncio.sleep(0)
    await _enter(queue, "org-b", first_b, order, "b1")
    assert order == ["b1"]
    await held.aclose()
    await waiting_a
    assert order == ["b1", "a2"]
    await second_a.aclose()
    await first_b.aclose()
    assert not queue.held


async def test_a_cancelled_waiter_leaves_without_a_slot() -> None:
    queue = SessionQueue(total=1)
    held = AsyncExitStack()
    await held.enter_async_context(queue.slot("org-a"))
    order: list[str] = []
    stack = AsyncExitStack()
    waiter = asyncio.create_task(_enter(queue, "org-a", stack, order, "w"))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert queue.waiting == 0
    await held.aclose()
    assert not queue.held and order == []
