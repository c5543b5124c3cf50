"""The composition root (corral.core): what it starts, in which order it stops it, and
that a failed start leaves nothing behind."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from corral.core import Core
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from tests.support.app import make_settings
from tests.unit.services.conftest import close_core, open_core

# Stopped from the last to the first, so each pair (a, b) here must start a before b:
# the store before the reaper that flushes into it, every part that records after the
# audit writer, the runtime's teardowns after the network (none on the process runtime)
# and before the standbys (removed before the teardowns are awaited).
CLAIM, STORE, AUDIT = "the data dir's claim", "the store", "the audit writer"
TEARDOWNS, SESSIONS = "the runtime's teardowns", "following exec sessions"
REAPER, SWITCHES, STANDBY = "the idle reaper", "the kill-switch refresher", "the standby sandboxes"
ORDER = [CLAIM, STORE, AUDIT, TEARDOWNS, SESSIONS, REAPER]


def starts_before(names: list[str], first: str, then: str) -> bool:
    return names.index(first) < names.index(then)


async def test_background_work_is_stopped_in_the_reverse_order_of_its_start(tmp_path: Path) -> None:
    core = await open_core(tmp_path)
    started = core.background.names
    assert started[0] == CLAIM and STANDBY not in started
    assert all(starts_before(started, a, b) for a, b in pairwise(ORDER))
    assert starts_before(started, AUDIT, SWITCHES)
    await close_core(core)
    assert core.background.names == []


async def test_the_standby_sandboxes_stop_before_the_runtime_settles(tmp_path: Path) -> None:
    core = await open_core(tmp_path, standby_sandboxes=1)
    try:
        started = core.background.names
        assert starts_before(started, TEARDOWNS, STANDBY) and starts_before(started, AUDIT, STANDBY)
    finally:
        await close_core(core)


class FailingReclaim(ProcessRuntime):
    async def reclaim(self, keep: set[str]) -> list[str]:
        raise RuntimeError("reclaim failed")


async def test_a_failed_open_stops_what_it_started(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    with pytest.raises(RuntimeError, match="reclaim failed"):
        await Core.open(settings, runtime=FailingReclaim(tmp_path / "run"), templates=StaticTemplates())
    core: Core = await open_core(tmp_path)  # the data dir was released
    await close_core(core)
