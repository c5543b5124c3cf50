"""Blocking work on a thread of its own that ends with it.

For work that changes its thread's state for good, which a pooled thread must never
carry to the next caller: joining a network namespace (``setns``: a thread's network
namespace is its own; the programs it starts inherit it), unsharing one. The thread
ends when the work does, so nothing of ours is ever left in the namespace.

The thread is started with ``_thread.start_new_thread``, which returns as soon as it
exists: ``threading.Thread.start`` also waits until the new thread has run its first
Python code, and that wait (the new thread must be scheduled and take the GIL) stalled
the event loop for milliseconds at a time in a burst of creates, twice per create.

A cancel is raised once the work has ended, as ``runtime.blocking.finish`` does: the
caller's undo sees everything the work made; its result or error is then dropped.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def on_own_thread(work: Callable[[], T]) -> T:
    """``work()`` on a new thread that ends with it; its result, or its exception."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(outcome: tuple[T, None] | tuple[None, BaseException]) -> None:
        if done.done():
            return
        result, error = outcome
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        outcome: tuple[T, None] | tuple[None, BaseException]
        try:
            outcome = (work(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (None, exc)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it
            loop.call_soon_threadsafe(settle, outcome)

    _thread.start_new_thread(run, ())
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        await asyncio.wait([done])
        if not done.cancelled():
            done.exception()  # dropped: the caller undoes what was made
        raise
