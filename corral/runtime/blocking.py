"""Blocking steps of a multi-step operation, run on a thread, that a cancel cannot split.

``asyncio.to_thread`` returns at a cancel at once while its thread goes on: a create
cancelled during its disk mount unwound its undo stack, and the mount landed after,
leaving a loop device nobody owned. ``finish`` runs the step the same way but, when
cancelled, first waits for the thread to end, then raises: the caller's undo steps see
everything the step did.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def finish(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on a thread; a cancel is raised once ``fn`` has returned
    (its result or error is then dropped: the caller's undo must handle what it did)."""
    return await _finish(None, functools.partial(fn, *args, **kwargs))


async def finish_owning(
    release: Callable[[T], object], fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``finish`` for a step whose result owns something (an fd, a socket): a result
    dropped at a cancel is handed to ``release`` before the cancel is raised. (An fd
    of a file on a sandbox's disk, dropped so, held the disk's unmounted filesystem and
    its loop device for as long as the process lived.)"""
    return await _finish(release, functools.partial(fn, *args, **kwargs))


async def _finish(release: Callable[[T], object] | None, call: Callable[[], T]) -> T:
    step = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        return await asyncio.shield(step)
    except asyncio.CancelledError:
        await asyncio.wait([step])
        if release is not None and step.exception() is None:
            release(step.result())
        raise
