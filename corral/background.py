"""The server's background work, stopped in the reverse order it was started.

``Core.open`` starts every part that runs in the background through one
``Background`` (the audit writer, the network's readers and refills, the standby
refill, the idle reaper, the kill-switch refresher, ...) and hands over what must
be undone at shutdown (the data dir's claim, the store, the runtime's teardowns) in
the order it made them. ``close`` stops them last first, so each part stops before
anything it needs: the reaper before the store it flushes into, the runtime's
teardowns before the network they take apart, everything that writes audit records
before the audit writer writes the last of them.

Contracts: ``start`` runs a part's start and, once it returned, remembers its stop
(a start that raises leaves nothing to stop). ``close`` calls every stop remembered,
last first, once; a stop that raises is logged and the ones after it still run.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("corral.background")

Step = Callable[[], Awaitable[object] | None]


class Background:
    def __init__(self) -> None:
        self._stops: list[tuple[str, Step]] = []

    async def start(self, name: str, start: Step, stop: Step) -> None:
        """Start ``name`` now; ``stop`` at ``close``."""
        await _run(start)
        self._stops.append((name, stop))

    def adopt(self, name: str, stop: Step) -> None:
        """``stop`` at ``close``, for ``name`` made just now."""
        self._stops.append((name, stop))

    @property
    def names(self) -> list[str]:
        """What runs, in the order it was started."""
        return [name for name, _ in self._stops]

    async def close(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                await _run(stop)
            except Exception:
                log.exception("stopping %s failed", name)


async def _run(step: Step) -> None:
    done = step()
    if inspect.isawaitable(done):
        await done
