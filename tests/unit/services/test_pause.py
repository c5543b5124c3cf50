"""Pause and resume (corral.services.lifecycle, corral.services.hibernator) on the
in-memory runtime: the states a sandbox goes through, what each use does to a paused
one, the 409s naming the state, the idle timeout's pause then hibernate, and a restart
(reconcile) that keeps a paused sandbox paused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from corral.core import Core
from corral.domain import ExecRequest, SandboxStatus
from corral.errors import Conflict, RuntimeFailure
from corral.runtime.memory import FakeRuntime
from corral.services.audit import AuditKind
from corral.services.sandboxes import CreateSandbox
from tests.support.clock import FakeClock
from tests.unit.services.conftest import close_core, open_core, owner, read, write


def frozen(core: Core, sandbox_id: str) -> bool:
    runtime = core.runtime
    assert isinstance(runtime, FakeRuntime)
    return runtime.sandboxes[sandbox_id].frozen


async def test_pause_freezes_and_every_use_resumes_it(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    await write(core, me, sb.id, "/root/kept", "memory")
    paused = await core.lifecycle.pause(me, sb.id)
    assert paused.status is SandboxStatus.PAUSED and paused.live
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.PAUSED
    assert frozen(core, sb.id)
    assert (await core.lifecycle.pause(me, sb.id)).status is SandboxStatus.PAUSED  # a no-op
    result = await core.commands.run(me, sb.id, ExecRequest("echo", ("up",)))  # an exec resumes it
    assert result.stdout == b"up\n" and not frozen(core, sb.id)
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING
    await core.lifecycle.pause(me, sb.id)
    assert await read(core, me, sb.id, "/root/kept") == "memory"  # files resume it too
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING
    await core.lifecycle.pause(me, sb.id)
    resumed = await core.lifecycle.resume(me, sb.id)
    assert resumed.status is SandboxStatus.RUNNING and not frozen(core, sb.id)
    await core.audit.flush()
    kinds = [e.kind for e in (await core.audit.sandbox_trail(me, sb.id)).events]
    assert AuditKind.PAUSED in kinds and AuditKind.RESUMED in kinds


async def test_pause_and_resume_refuse_other_states_naming_them(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    with pytest.raises(Conflict, match="is running"):
        await core.lifecycle.resume(me, sb.id)
    await core.lifecycle.hibernate(me, sb.id)
    with pytest.raises(Conflict, match="is hibernated"):
        await core.lifecycle.pause(me, sb.id)
    await core.sandboxes.kill(me, sb.id)
    with pytest.raises(Conflict, match="is stopped"):
        await core.lifecycle.pause(me, sb.id)
    with pytest.raises(Conflict, match="is stopped"):
        await core.lifecycle.resume(me, sb.id)


async def test_resume_wakes_a_sandbox_hibernated_while_paused_and_wake_resumes(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    await core.lifecycle.pause(me, sb.id)
    assert (await core.lifecycle.hibernate(me, sb.id)).status is SandboxStatus.HIBERNATED
    assert (await core.lifecycle.resume(me, sb.id)).status is SandboxStatus.RUNNING
    await core.lifecycle.pause(me, sb.id)
    assert (await core.lifecycle.wake(me, sb.id)).status is SandboxStatus.RUNNING
    assert not frozen(core, sb.id)


async def test_a_freeze_that_fails_leaves_it_running(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))

    async def broken(sandbox_id: str) -> None:
        raise RuntimeFailure("the processes did not freeze")

    monkeypatch.setattr(core.runtime, "freeze", broken)
    with pytest.raises(RuntimeFailure):
        await core.lifecycle.pause(me, sb.id)
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING


async def test_idle_pauses_then_hibernates_and_a_failed_pause_hibernates(
    clocked_core: Core, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = clocked_core
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=10))
    clock.advance(11)
    assert await core.sandboxes.reap_idle() == [sb.id]
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.PAUSED and frozen(core, sb.id)
    clock.advance(core.settings.paused_idle_s - 2)  # idle 9 s short of timeout + paused_idle_s
    assert await core.sandboxes.reap_idle() == []
    clock.advance(2)
    assert await core.sandboxes.reap_idle() == [sb.id]
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.HIBERNATED

    other = await core.sandboxes.create(me, CreateSandbox(timeout_s=10))

    async def broken(sandbox_id: str) -> None:
        raise RuntimeFailure("the processes did not freeze")

    monkeypatch.setattr(core.runtime, "freeze", broken)
    clock.advance(11)
    assert await core.sandboxes.reap_idle() == [other.id]
    assert (await core.sandboxes.get(me, other.id)).status is SandboxStatus.HIBERNATED


async def test_without_paused_idle_the_idle_timeout_hibernates_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    core = await open_core(tmp_path, clock, paused_idle_s=0)
    try:
        me = await owner(core)
        sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=10))
        clock.advance(11)
        assert await core.sandboxes.reap_idle() == [sb.id]
        assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.HIBERNATED
    finally:
        await close_core(core)


async def test_a_restart_keeps_a_paused_sandbox_paused_and_it_resumes(tmp_path: Path) -> None:
    runtime = FakeRuntime()  # the node's sandboxes outlive the corral process
    first = await open_core(tmp_path, runtime=runtime)
    me = await owner(first)
    kept = await first.sandboxes.create(me, CreateSandbox(timeout_s=0))
    thawed = await first.sandboxes.create(me, CreateSandbox(timeout_s=0))
    lost = await first.sandboxes.create(me, CreateSandbox(timeout_s=0))
    for sb in (kept, thawed, lost):
        await first.lifecycle.pause(me, sb.id)
    await first.close()
    await runtime.thaw(thawed.id)  # a crash between the thaw and the row's update
    await runtime.hibernate(lost.id)  # its processes gone, its disk kept
    second = await open_core(tmp_path, runtime=runtime)
    try:
        report = await second.sandboxes.reconcile()
        assert sorted(report.paused) == sorted([kept.id, thawed.id]) and report.hibernated == [lost.id]
        for sb in (kept, thawed):
            assert (await second.sandboxes.get(me, sb.id)).status is SandboxStatus.PAUSED
            assert frozen(second, sb.id)
        assert (await second.sandboxes.get(me, lost.id)).status is SandboxStatus.HIBERNATED
        result = await second.commands.run(me, kept.id, ExecRequest("echo", ("again",)))
        assert result.stdout == b"again\n"
        assert (await second.sandboxes.get(me, kept.id)).status is SandboxStatus.RUNNING
    finally:
        await close_core(second)


async def test_the_use_that_resumes_reads_nothing_and_a_stale_memory_is_safe(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    await core.lifecycle.pause(me, sb.id)

    async def unread(org_id: str, sandbox_id: str) -> None:
        raise AssertionError("the store was read")

    with monkeypatch.context() as patched:
        patched.setattr(core.sandboxes.store, "get", unread)
        assert (await core.commands.run(me, sb.id, ExecRequest("true"))).exit_code == 0
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING

    await core.lifecycle.pause(me, sb.id)
    row = await core.sandboxes.store.find(sb.id)
    assert row is not None
    await core.runtime.hibernate(sb.id)  # another process hibernated it meanwhile
    await core.sandboxes.store.update(replace(row, status=SandboxStatus.HIBERNATED))
    result = await core.commands.run(me, sb.id, ExecRequest("echo", ("woken",)))  # wakes it
    assert result.stdout == b"woken\n"
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING
