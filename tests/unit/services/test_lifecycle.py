"""Hibernate, wake (explicit, on use, in the background, single-flight), keepalive and
extend, and reconcile of hibernated sandboxes, on the in-memory runtime over SQLite."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from corral.core import Core
from corral.domain import ExecRequest, RuntimeState, SandboxSpec, SandboxStatus, SessionSpec
from corral.errors import Conflict, NotFound, SandboxWaking
from corral.runtime.memory import FakeRuntime
from corral.services.lifecycle import wake_in_background
from corral.services.sandboxes import CreateSandbox, end_at
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async
from tests.unit.services.conftest import owner, read, write


async def test_hibernate_keeps_files_frees_processes_and_wake_brings_it_back(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await write(core, me, sb.id, "f", "kept\n")
    session = await core.commands.start_session(me, sb.id, SessionSpec("sleep", ("1000",)))
    done = await core.lifecycle.hibernate(me, sb.id)
    assert (done.sandbox_id, done.status) == (sb.id, SandboxStatus.HIBERNATED) and done.size_bytes > 0
    assert done.key == f"sandboxes/{sb.id}/disk"
    assert await core.runtime.state(sb.id) == RuntimeState.STOPPED
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.HIBERNATED
    assert [s.id for s in await core.sandboxes.list(me)] == [sb.id]  # still listed
    assert (await core.lifecycle.hibernate(me, sb.id)).status is SandboxStatus.HIBERNATED  # idempotent
    woken = await core.lifecycle.wake(me, sb.id, timeout_s=0)
    assert woken.status is SandboxStatus.RUNNING and woken.timeout_s == 0
    assert await read(core, me, sb.id, "f") == "kept\n"
    assert await core.commands.list_sessions(me, sb.id) == []  # its processes did not survive
    with pytest.raises(NotFound):
        await core.commands.kill_session(me, sb.id, session.id)
    assert (await core.lifecycle.wake(me, sb.id)).status is SandboxStatus.RUNNING  # no-op
    await core.sandboxes.kill(me, sb.id)
    with pytest.raises(Conflict):
        await core.lifecycle.wake(me, sb.id)
    with pytest.raises(Conflict):
        await core.lifecycle.hibernate(me, sb.id)


async def test_a_request_wakes_a_hibernated_sandbox_once_for_many_callers(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await write(core, me, sb.id, "f", "hi\n")
    await core.lifecycle.hibernate(me, sb.id)
    resumes = 0
    real = core.runtime.resume

    async def counting(spec: SandboxSpec, *, forked: bool = False) -> None:
        nonlocal resumes
        resumes += 1
        await real(spec, forked=forked)

    core.runtime.resume = counting  # type: ignore[method-assign]
    outputs = await asyncio.gather(*(read(core, me, sb.id, "f") for _ in range(5)))
    assert outputs == ["hi\n"] * 5 and resumes == 1
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING


async def test_background_wake_answers_waking_at_once_then_runs(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await core.lifecycle.hibernate(me, sb.id)
    token = wake_in_background.set(True)
    try:
        with pytest.raises(SandboxWaking):
            await core.commands.run(me, sb.id, ExecRequest("true"))

        async def woken() -> bool:
            row = await core.sandboxes.store.find(sb.id)
            return row is not None and row.status is SandboxStatus.RUNNING

        await eventually_async(woken, 10, "never woke")  # the wake goes on in its own task
        result = await core.commands.run(me, sb.id, ExecRequest("echo", ("up",)))
    finally:
        wake_in_background.reset(token)
    assert result.stdout == b"up\n"


async def test_idle_timeout_pauses_but_not_while_held_and_extend_stacks(
    clocked_core: Core, clock: FakeClock
) -> None:
    core = clocked_core
    me = await owner(core)
    held = await core.sandboxes.create(me, CreateSandbox(timeout_s=1))
    idle = await core.sandboxes.create(me, CreateSandbox(timeout_s=1))
    deadline = end_at(held)
    assert deadline is not None
    first = await core.lifecycle.extend(me, held.id)
    assert first.hold_until == deadline + timedelta(seconds=900)
    second = await core.lifecycle.extend(me, held.id)
    assert second.hold_until == deadline + timedelta(seconds=1800)  # stacks
    assert end_at(second) == second.hold_until
    clock.advance(1.2)
    assert await core.sandboxes.reap_idle() == [idle.id]
    assert (await core.sandboxes.get(me, idle.id)).status is SandboxStatus.PAUSED
    assert (await core.sandboxes.get(me, held.id)).status is SandboxStatus.RUNNING
    kept = await core.lifecycle.keepalive(me, idle.id, seconds=60)  # allowed while paused
    assert kept.status is SandboxStatus.PAUSED and kept.hold_until is not None
    reset = await core.sandboxes.set_timeout(me, held.id, 1)
    assert reset.hold_until is None  # an explicit timeout replaces the hold


async def test_reconcile_keeps_hibernated_parks_lost_ones_and_stops_those_without_disk(core: Core) -> None:
    me = await owner(core)
    sleeping = await core.sandboxes.create(me, CreateSandbox())
    await core.lifecycle.hibernate(me, sleeping.id)
    lost = await core.sandboxes.create(me, CreateSandbox())
    await write(core, me, lost.id, "f", "mine\n")
    gone = await core.sandboxes.create(me, CreateSandbox())
    await core.lifecycle.hibernate(me, gone.id)
    assert isinstance(core.runtime, FakeRuntime)
    core.runtime.sandboxes[lost.id].stop()  # its processes die behind corral's back
    assert await core.runtime.state(lost.id) == RuntimeState.STOPPED
    await core.runtime.destroy(gone.id)  # its disk disappears
    report = await core.sandboxes.reconcile()
    assert sorted(report.hibernated) == sorted([sleeping.id, lost.id])
    assert report.marked_stopped == [gone.id]
    assert (await core.sandboxes.get(me, lost.id)).status is SandboxStatus.HIBERNATED
    assert (await core.sandboxes.get(me, gone.id)).status is SandboxStatus.STOPPED
    assert await read(core, me, lost.id, "f") == "mine\n"  # woken on use, files intact
