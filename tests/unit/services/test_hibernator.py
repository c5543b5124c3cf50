"""The Hibernator (corral.services.hibernator) as the idle reaper uses it: an idle
sandbox is paused, then hibernated, with the activity not yet written in its row; one
whose hibernation fails is stopped instead, saying why."""

from __future__ import annotations

import pytest

from corral.core import Core
from corral.domain import SandboxStatus
from corral.errors import RuntimeFailure
from corral.services.sandboxes import CreateSandbox
from tests.support.clock import FakeClock
from tests.unit.services.conftest import owner


async def test_a_hibernated_row_keeps_the_last_use_not_yet_written(
    clocked_core: Core, clock: FakeClock
) -> None:
    core = clocked_core
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(timeout_s=600))
    clock.advance(30)
    core.sandboxes.touch(sandbox.id)  # a use the reaper has not written yet
    await core.lifecycle.hibernate(me, sandbox.id)
    row = await core.sandboxes.store.find(sandbox.id)
    assert row is not None and row.status is SandboxStatus.HIBERNATED
    assert row.last_active_at == clock.now()


async def test_an_idle_sandbox_that_cannot_hibernate_is_stopped(
    clocked_core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = clocked_core
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(timeout_s=1))

    async def broken(sandbox_id: str) -> int:
        raise RuntimeFailure("the disk is busy")

    monkeypatch.setattr(core.runtime, "hibernate", broken)
    clock.advance(2)
    assert await core.sandboxes.reap_idle() == [sandbox.id]  # paused
    clock.advance(core.settings.paused_idle_s)
    assert await core.sandboxes.reap_idle() == [sandbox.id]  # hibernated: it fails
    row = await core.sandboxes.get(me, sandbox.id)
    assert row.status is SandboxStatus.STOPPED
    assert row.error == "idle timeout; hibernating failed: the disk is busy"
