"""Test-only pause points: a test can stop corral in the middle of a multi-step
operation (and kill it there) to check what a crash leaves behind.

``CORRAL_TEST_PAUSE=point=seconds[,point=seconds...]`` (read once, at first use) makes
``pause(point)`` / ``pause_blocking(point)`` sleep that long and log the point first
(``pause point <name> reached``), so the test knows when to strike. Unset, both are
no-ops costing one dict lookup. Points: ``checkpoint.frozen`` (a running sandbox frozen,
its disk half copied), ``fork.copied`` (the fork's disk made, nothing started),
``hibernate.stopped`` (the container gone, mounts and store row not yet updated).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

log = logging.getLogger("corral.pause")

_points: dict[str, float] | None = None


def _delay(point: str) -> float:
    global _points
    if _points is None:
        _points = {}
        for item in os.environ.get("CORRAL_TEST_PAUSE", "").split(","):
            name, _, seconds = item.partition("=")
            try:
                _points[name.strip()] = float(seconds)
            except ValueError:
                continue
    delay = _points.get(point, 0.0)
    if delay > 0:
        log.warning("pause point %s reached; sleeping %.1f s", point, delay)
    return delay


async def pause(point: str) -> None:
    delay = _delay(point)
    if delay > 0:
        await asyncio.sleep(delay)


def pause_blocking(point: str) -> None:
    delay = _delay(point)
    if delay > 0:
        time.sleep(delay)
