"""TreeWork: the threads that do corral's blocking work in trees tenants control.

Work in a sandbox's upper layer or a Dockerfile template's root (``rootdir.py``,
``ownership.py``, removing a failed build) runs on its own small pool instead of the
default executor every tenant's requests share: however slow one gets, the server's
other blocking calls (store, mounts, other orgs' creates) keep their threads.

Contracts:
- At most ``workers`` calls run at once in all; at most ``per_owner`` of them for one
  owner (a sandbox id, a template name): the others of that owner wait their turn, so
  one sandbox or build never holds more than its share of the pool.
- A call longer than its time limit raises ``RuntimeFailure`` naming the work; its
  thread goes on to its end and keeps its owner's slot until then (a thread cannot be
  stopped; what it does must be bounded, which ``rootdir.py`` makes it).
- A cancel is raised once the thread has returned (its result dropped), like
  ``blocking.finish``: the caller's undo steps see everything the call did.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from corral.errors import RuntimeFailure

P = ParamSpec("P")
T = TypeVar("T")

WORKERS = 4
PER_OWNER = 1
TIMEOUT_S = 60.0


class TreeWork:
    def __init__(
        self, workers: int = WORKERS, per_owner: int = PER_OWNER, timeout_s: float = TIMEOUT_S
    ) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="corral-tree"
        )
        self._per_owner = per_owner
        self._timeout_s = timeout_s
        self._owners: dict[str, tuple[asyncio.Semaphore, int]] = {}

    async def run(
        self,
        owner: str,
        what: str,
        fn: Callable[P, T],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``fn(*args, **kwargs)`` on the pool, within the time limit; ``what`` names it
        in the error. See the module docstring."""
        return await self.run_for(owner, what, self._timeout_s, functools.partial(fn, *args, **kwargs))

    async def run_for(self, owner: str, what: str, timeout_s: float, fn: Callable[[], T]) -> T:
        """``fn()`` like ``run``, with its own time limit."""
        slot = self._enter(owner)
        try:
            await slot.acquire()
        except BaseException:
            self._leave(owner)
            raise
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        step = loop.run_in_executor(self._pool, context.run, fn)

        def release(_done: asyncio.Future[T]) -> None:
            slot.release()
            self._leave(owner)

        step.add_done_callback(release)
        try:
            return await asyncio.wait_for(asyncio.shield(step), timeout_s)
        except TimeoutError:
            raise RuntimeFailure(f"{what} took longer than {timeout_s:g} s") from None
        except asyncio.CancelledError:
            await asyncio.wait([step])
            raise

    def busy(self, owner: str) -> int:
        """How many calls of ``owner`` are running or waiting."""
        entry = self._owners.get(owner)
        return entry[1] if entry else 0

    def _enter(self, owner: str) -> asyncio.Semaphore:
        slot, users = self._owners.get(owner) or (asyncio.Semaphore(self._per_owner), 0)
        self._owners[owner] = (slot, users + 1)
        return slot

    def _leave(self, owner: str) -> None:
        slot, users = self._owners[owner]
        if users <= 1:
            del self._owners[owner]
        else:
            self._owners[owner] = (slot, users - 1)


_shared: TreeWork | None = None


def shared() -> TreeWork:
    """The node's one TreeWork (made at first use: nothing starts at import)."""
    global _shared
    if _shared is None:
        _shared = TreeWork()
    return _shared
