"""SandboxService on the in-memory runtime and SQLite."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import ExecRequest, RuntimeState, Sandbox, SandboxSpec, SandboxStatus
from corral.errors import Conflict, InvalidInput, NotFound, RuntimeFailure
from corral.runtime.memory import FakeRuntime
from corral.services.sandboxes import CreateSandbox
from tests.support.clock import FakeClock
from tests.unit.services.conftest import owner

OWNER = Role.OWNER


class BrokenRuntime(FakeRuntime):
    """Fails every create, as a runtime whose runc is broken would."""

    async def create(self, spec: SandboxSpec) -> None:
        raise RuntimeFailure("runc exploded")


async def test_create_exec_kill(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(envs={"GREETING": "hi"}, metadata={"a": "b"}))
    assert sb.status is SandboxStatus.RUNNING and sb.id.startswith("sb-")
    result = await core.commands.run(me, sb.id, ExecRequest("env"))
    assert b"GREETING=hi\n" in result.stdout and result.exit_code == 0
    assert [s.id for s in await core.sandboxes.list(me)] == [sb.id]
    await core.sandboxes.kill(me, sb.id)
    await core.sandboxes.kill(me, sb.id)  # idempotent
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.STOPPED
    assert await core.sandboxes.list(me) == []
    with pytest.raises(Conflict):
        await core.commands.run(me, sb.id, ExecRequest("true"))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (CreateSandbox(cpu_count=5), "cpuCount"),
        (CreateSandbox(cpu_count=0), "cpuCount"),
        (CreateSandbox(memory_mb=999999), "memoryMB"),
        (CreateSandbox(disk_mb=1), "diskMB"),
        (CreateSandbox(timeout_s=-1), "timeout"),
        (CreateSandbox(envs={"BAD=NAME": "x"}), "envs"),
    ],
)
async def test_create_rejects_bad_input(core: Core, request_: CreateSandbox, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        await core.sandboxes.create(await owner(core), request_)
    assert err.value.field == field


async def test_unknown_template_is_not_found(core: Core) -> None:
    with pytest.raises(NotFound) as err:
        await core.sandboxes.create(await owner(core), CreateSandbox(template="nope"))
    assert err.value.field == "templateID"


async def test_failed_create_leaves_no_row(core: Core) -> None:
    me = await owner(core)
    core.sandboxes.runtime = BrokenRuntime()
    with pytest.raises(RuntimeFailure):
        await core.sandboxes.create(me, CreateSandbox())
    assert await core.sandboxes.store.list_all() == []


async def test_other_org_and_worker_token_scope(core: Core) -> None:
    me = await owner(core)
    a = await core.sandboxes.create(me, CreateSandbox())
    b = await core.sandboxes.create(me, CreateSandbox())
    stranger = Principal(org_id="org-zzzzzzzz", role=OWNER)
    with pytest.raises(NotFound):
        await core.sandboxes.get(stranger, a.id)
    worker = await core.auth.authenticate_token(core.auth.issue_token(me, a.id))
    assert (await core.sandboxes.get(worker, a.id)).id == a.id
    with pytest.raises(NotFound):
        await core.sandboxes.get(worker, b.id)
    with pytest.raises(NotFound):
        await core.sandboxes.get(me, "../../etc")


async def test_idle_timeout_pauses_then_hibernates_and_activity_defers(
    clocked_core: Core, clock: FakeClock
) -> None:
    core = clocked_core
    me = await owner(core)
    idle = await core.sandboxes.create(me, CreateSandbox(timeout_s=1))
    busy = await core.sandboxes.create(me, CreateSandbox(timeout_s=1))
    forever = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    for _ in range(3):
        clock.advance(0.5)
        await core.commands.run(me, busy.id, ExecRequest("true"))
    reaped = await core.sandboxes.reap_idle()
    assert reaped == [idle.id]
    assert (await core.sandboxes.get(me, idle.id)).status is SandboxStatus.PAUSED
    assert await core.sandboxes.reap_idle() == []  # paused: idle for paused_idle_s more first
    clock.advance(core.settings.paused_idle_s)
    await core.commands.run(me, busy.id, ExecRequest("true"))
    assert await core.sandboxes.reap_idle() == [idle.id]
    assert (await core.sandboxes.get(me, idle.id)).status is SandboxStatus.HIBERNATED
    assert (await core.sandboxes.get(me, busy.id)).status is SandboxStatus.RUNNING
    assert (await core.sandboxes.get(me, forever.id)).status is SandboxStatus.RUNNING
    assert await core.runtime.state(idle.id) == RuntimeState.STOPPED  # no processes, disk kept
    await core.sandboxes.kill(me, idle.id)
    assert idle.id not in await core.runtime.list_ids()


async def test_reconcile_reclaims_what_a_stopped_row_left_behind(core: Core) -> None:
    """A kill answers before the runtime has removed everything; if corral stops in
    between, the row is stopped and the leftovers belong to nobody: reclaimed."""
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    row = await core.sandboxes.store.find(sb.id)
    assert row is not None
    await core.sandboxes.store.update(replace(row, status=SandboxStatus.STOPPED))  # killed, not cleaned up
    assert sb.id in await core.runtime.list_ids()
    report = await core.sandboxes.reconcile()
    assert sb.id in report.reclaimed and sb.id not in report.marked_stopped
    assert sb.id not in await core.runtime.list_ids()


async def test_reconcile_keeps_running_marks_dead_and_reclaims(core: Core) -> None:
    me = await owner(core)
    alive = await core.sandboxes.create(me, CreateSandbox())
    dead = await core.sandboxes.create(me, CreateSandbox())
    await core.runtime.destroy(dead.id)  # dies behind corral's back
    orphan = "sb-orphan0000000000"
    await core.runtime.create(SandboxSpec(orphan, await core.templates.get("base"), alive.limits))
    report = await core.sandboxes.reconcile()
    assert report.running == [alive.id]
    assert report.marked_stopped == [dead.id]
    assert orphan in report.reclaimed
    assert (await core.sandboxes.get(me, dead.id)).status is SandboxStatus.STOPPED
    assert await core.runtime.list_ids() == {alive.id}


async def test_a_running_sandbox_is_remembered_for_exec_until_it_stops(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    reads = 0
    store = core.sandboxes.store
    real = store.get

    async def counted(org_id: str, sandbox_id: str) -> Sandbox:
        nonlocal reads
        reads += 1
        return await real(org_id, sandbox_id)

    store.get = counted  # type: ignore[method-assign]
    for _ in range(3):
        assert (await core.commands.run(me, sb.id, ExecRequest("true"))).exit_code == 0
    assert reads == 0, "no store read: the create remembered it running"
    stranger = Principal(org_id="org-zzzzzzzz", role=OWNER)
    with pytest.raises(NotFound):
        await core.sandboxes.agent_for(stranger, sb.id)
    worker = Principal(org_id=me.org_id, role=OWNER, sandbox_id="sb-someoneelse000")
    with pytest.raises(NotFound):
        await core.sandboxes.agent_for(worker, sb.id)
    await core.sandboxes.kill(me, sb.id)
    with pytest.raises(Conflict):
        await core.sandboxes.agent_for(me, sb.id)
