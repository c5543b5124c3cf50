"""Exec round trips in flight at the front (``corral.api.front``): turns taken before a
request's body, authentication and routing, so the other routes are served ahead.

Why. With a hundred clients each keeping an exec in flight, every exec request behind the
front costs its body, its credential check, FastAPI's routing and dependencies, as much as
the exec itself; the service's own bound (``services/commands.py``) comes after all of that.
A plain GET arriving then waits behind every one of them. Here an exec request waits
before any of it, as parsed bytes on a connection whose reading is paused.

Which requests (``is_exec``): a POST to a path that runs a command and waits for it, on
every surface: OpenComputer's ``/sandboxes/{id}/exec/run`` and ``run-async`` (both
mounts), xgen's ``/api/v1/sandboxes/{id}/exec``, Copass's
``/api/v1/storage/sandboxes/{id}/compute/sessions/{sid}/exec`` and E2B's
``/process.Process/Start``. MCP's tool calls and the agent-runs surface are not told apart
by their head (their exec is still bounded in the service).

Contracts of ``FrontTurns``:
- At most ``concurrency`` turns are held at once (0: no bound); while a request other
  than an exec is in flight behind the front, new turns are given only up to ``ahead``
  at once (default 1; measured against 2 and 4, docs/benchmarks.md): the other routes are
  served ahead of the execs waiting. A request counts as in flight until its answer is
  complete, for ``other_hold_s`` at most (a long download or stream does not keep execs
  slow). The price: under a steady stream of other requests to the API, execs go one at
  a time (the gateway's requests, a sandbox's own traffic, neither count nor take turns).
- The others wait, first in first out per credential (the request's ``X-API-Key``,
  ``Authorization`` or ``X-Access-Token``, else its client address: known from the head,
  before any check), credentials taking turns: when a turn ends, of the credentials with a
  request waiting the one served longest ago gets it.
- At most ``max_waiting`` wait: one more goes on at once, without a turn (then the
  service's queue answers it, in its surface's envelope: 429 when that is full too).
- A turn is released when its answer is complete or its connection is lost, and after
  ``max_hold_s`` at most (a long command then waits in its sandbox without keeping others
  waiting). A waiter whose connection is lost leaves the queue; a turn handed to a
  connection lost meanwhile is passed on.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from corral.fair import FairWaiters

_EXEC = re.compile(
    rb"(?:/api)?/sandboxes/[^/?]+/exec/run(?:-async)?"
    rb"|/api/v1/sandboxes/[^/?]+/exec"
    rb"|/api/v1/storage/sandboxes/[^/?]+/compute/sessions/[^/?]+/exec"
    rb"|/process\.Process/Start"
)
_CREDENTIALS = (b"x-api-key", b"authorization", b"x-access-token")


def is_exec(method: bytes, url: bytes) -> bool:
    """Whether a request is an exec round trip (see the module docstring)."""
    if method != b"POST":
        return False
    path = url.partition(b"?")[0]
    return _EXEC.fullmatch(path) is not None


def turn_key(headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None) -> bytes:
    """Whose turn a request takes: its credential as sent, else its client address."""
    for name, value in headers:
        if name in _CREDENTIALS:
            return value
    return client[0].encode() if client is not None else b""


class _Held:
    """Something held until ``end`` (idempotent) or, at the latest, ``limit_s`` seconds:
    then ``ended`` is called once."""

    __slots__ = ("_ended", "_timer")

    def __init__(
        self, ended: Callable[[], None], limit_s: float | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._ended: Callable[[], None] | None = ended
        self._timer = None if limit_s is None else loop.call_later(limit_s, self.end)

    def end(self) -> None:
        ended, self._ended = self._ended, None
        if ended is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ended()


class Turn(_Held):
    """A turn held, for ``max_hold_s`` at most; ``release`` is idempotent."""

    __slots__ = ()

    def __init__(self, turns: FrontTurns, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(turns._release, turns.max_hold_s, loop)

    def release(self) -> None:
        self.end()


class Waiter:
    """A request waiting for a turn; ``granted(turn)`` is called (soon, from the loop) when
    it gets one."""

    __slots__ = ("granted", "key", "loop")

    def __init__(self, key: bytes, granted: Callable[[Turn], None], loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.granted = granted
        self.loop = loop


class Other(_Held):
    """A request other than an exec in flight behind the front, counted for
    ``other_hold_s`` at most; ``end`` is idempotent."""

    __slots__ = ()

    def __init__(self, turns: FrontTurns, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(turns._other_ended, turns.other_hold_s, loop)


class FrontTurns:
    def __init__(
        self,
        concurrency: int,
        max_waiting: int,
        max_hold_s: float | None = None,
        *,
        ahead: int = 1,
        other_hold_s: float = 0.5,
    ) -> None:
        self.concurrency = concurrency
        self.max_waiting = max_waiting
        self.max_hold_s = max_hold_s
        self.ahead = ahead
        self.other_hold_s = other_hold_s
        self.running = 0
        self.others = 0  # other requests in flight (each counted at most other_hold_s)
        self._waiters: FairWaiters[bytes, Waiter] = FairWaiters()  # by credential

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def ask(
        self, key: bytes, granted: Callable[[Turn], None], loop: asyncio.AbstractEventLoop
    ) -> Turn | Waiter | None:
        """A turn now; or a ``Waiter`` in the queue (``granted`` is called with the turn
        later); or None: no bound, or the queue is full, and the request goes on without one."""
        if self.concurrency <= 0:
            return None
        if self.running < self._limit() and not self._waiters:
            self.running += 1
            self._waiters.served(key)
            return Turn(self, loop)
        if len(self._waiters) >= self.max_waiting:
            return None
        waiter = Waiter(key, granted, loop)
        self._waiters.add(key, waiter)
        return waiter

    def forget(self, waiter: Waiter) -> None:
        """``waiter`` no longer wants its turn (its connection is lost)."""
        self._waiters.remove(waiter.key, waiter)

    def other(self, loop: asyncio.AbstractEventLoop) -> Other | None:
        """A request other than an exec goes behind: until it ends (or ``other_hold_s``
        has passed) exec turns are given only up to ``ahead`` at once."""
        if self.concurrency <= 0:
            return None
        self.others += 1
        return Other(self, loop)

    def _limit(self) -> int:
        return min(self.concurrency, self.ahead) if self.others else self.concurrency

    def _other_ended(self) -> None:
        self.others -= 1
        if not self.others:
            self._grant()

    def _release(self) -> None:
        self.running -= 1
        self._grant()

    def _grant(self) -> None:
        """Turns to waiters while there is room."""
        limit = self._limit()
        while self.running < limit and (next_one := self._waiters.pop()) is not None:
            key, waiter = next_one
            self.running += 1
            self._waiters.served(key)
            waiter.loop.call_soon(waiter.granted, Turn(self, waiter.loop))
