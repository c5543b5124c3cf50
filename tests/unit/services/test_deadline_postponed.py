"""SandboxService.postpone_deadline (xgen's keepalive): the deadline moves to now plus
the seconds given, never earlier than it was; on the in-memory runtime with a fake clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import SandboxStatus
from corral.errors import Conflict, Forbidden, InvalidInput
from corral.services.sandboxes import CreateSandbox
from tests.support.clock import FakeClock
from tests.unit.services.conftest import owner


async def test_postponed_never_earlier_and_then_kept(clocked_core: Core, clock: FakeClock) -> None:
    core = clocked_core
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(timeout_s=0, lifetime_s=10))
    clock.advance(8)
    moved = await core.sandboxes.postpone_deadline(me, sandbox.id, 3600)
    assert moved.deadline_at == clock.now() + timedelta(seconds=3600)
    kept = await core.sandboxes.postpone_deadline(me, sandbox.id, 60)  # earlier: not moved
    assert kept.deadline_at == moved.deadline_at
    clock.advance(100)
    assert await core.sandboxes.reap_idle() == []  # its first deadline has passed
    clock.advance(3600)
    assert await core.sandboxes.reap_idle() == [sandbox.id]
    assert (await core.sandboxes.get(me, sandbox.id)).status is SandboxStatus.STOPPED
    with pytest.raises(Conflict):
        await core.sandboxes.postpone_deadline(me, sandbox.id, 60)


async def test_postpone_needs_write_and_a_sane_span(clocked_core: Core) -> None:
    core = clocked_core
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    assert (await core.sandboxes.postpone_deadline(me, sandbox.id, 5)).deadline_at is not None
    for seconds in (0, 31 * 24 * 3600):
        with pytest.raises(InvalidInput) as bad:
            await core.sandboxes.postpone_deadline(me, sandbox.id, seconds)
        assert bad.value.field == "seconds"
    viewer = Principal(org_id=me.org_id, role=Role.VIEWER, key_id="k-viewer")
    with pytest.raises(Forbidden):
        await core.sandboxes.postpone_deadline(viewer, sandbox.id, 60)
