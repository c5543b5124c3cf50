"""The time a service reads, as a port: ``Clock`` gives a monotonic reading (for
intervals, caches, rate limits) and the wall time (for what is stored and shown:
activity, deadlines). Services take one (``SYSTEM``, the machine's, by default), so a
test of an idle timeout or a deadline advances a fake clock instead of sleeping.

Only the readings go through it: what a service waits for (``asyncio.sleep`` in a
background loop) still runs on the event loop's time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary start; never goes back."""
        ...

    def now(self) -> datetime:
        """The wall time, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's clocks: ``time.monotonic`` and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM: Clock = SystemClock()
