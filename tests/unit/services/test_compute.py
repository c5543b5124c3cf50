"""Compute sessions (services/compute.py) and the core's sandbox deadline they rest on:
on the in-memory runtime with a fake clock (deadlines pass when the test advances it),
and exec's stdin on the process runtime (the real agent)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import ExecResult, SandboxStatus
from corral.errors import Conflict, Forbidden, InvalidInput, NotFound
from corral.services.compute import (
    CREATOR,
    NAMESPACE,
    OUTPUT_CAP,
    Command,
    ComputeService,
    NewSession,
    _capped,
)
from corral.services.sandboxes import CreateSandbox
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async
from tests.unit.services.conftest import owner

SESSION = NewSession("base", {"GREETING": "hi"}, {"team": "a"}, 60)


async def test_a_sandbox_is_stopped_and_removed_at_its_deadline_whatever_its_activity(
    clocked_core: Core, clock: FakeClock
) -> None:
    core = clocked_core
    me = await owner(core)
    doomed = await core.sandboxes.create(me, CreateSandbox(timeout_s=0, lifetime_s=10))
    assert doomed.deadline_at is not None
    assert (doomed.deadline_at - doomed.created_at).total_seconds() == 10
    free = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    clock.advance(9)
    core.sandboxes.touch(doomed.id)  # activity does not defer a deadline
    assert await core.sandboxes.reap_idle() == []
    clock.advance(1)
    assert await core.sandboxes.reap_idle() == [doomed.id]
    stopped = await core.sandboxes.get(me, doomed.id)
    assert (stopped.status, stopped.error) == (SandboxStatus.STOPPED, "deadline")
    assert doomed.id not in await core.runtime.list_ids()
    assert (await core.sandboxes.get(me, free.id)).status is SandboxStatus.RUNNING


async def test_a_sandbox_with_a_deadline_is_stopped_not_hibernated_when_idle(
    clocked_core: Core, clock: FakeClock
) -> None:
    core = clocked_core
    me = await owner(core)
    idle = await core.sandboxes.create(me, CreateSandbox(timeout_s=1, lifetime_s=100))
    clock.advance(2)
    assert await core.sandboxes.reap_idle() == [idle.id]
    assert (await core.sandboxes.get(me, idle.id)).status is SandboxStatus.STOPPED


async def test_the_reaper_passes_at_a_deadline_before_its_interval(core: Core) -> None:
    """The core's reaper passes every hour here (``reaper_interval_s``): a sandbox with a
    1 s lifetime is stopped once that second has passed all the same, as is one created
    while the reaper already sleeps towards a later deadline."""
    me = await owner(core)
    later = await core.sandboxes.create(me, CreateSandbox(timeout_s=0, lifetime_s=3))
    sooner = await core.sandboxes.create(me, CreateSandbox(timeout_s=0, lifetime_s=1))

    async def stopped(sandbox_id: str) -> bool:
        return (await core.sandboxes.get(me, sandbox_id)).status is SandboxStatus.STOPPED

    await eventually_async(lambda: stopped(sooner.id), 10, "not stopped at its deadline")
    assert not await stopped(later.id)
    await eventually_async(lambda: stopped(later.id), 10, "not stopped at its deadline")
    assert (await core.sandboxes.get(me, later.id)).error == "deadline"


@pytest.mark.parametrize("lifetime", [0, 30 * 24 * 3600 + 1])
async def test_a_lifetime_out_of_range_is_refused(core: Core, lifetime: int) -> None:
    with pytest.raises(InvalidInput) as refused:
        await core.sandboxes.create(await owner(core), CreateSandbox(lifetime_s=lifetime))
    assert refused.value.field == "lifetime"


async def test_sessions_live_in_their_namespace(clocked_core: Core, clock: FakeClock) -> None:
    core = clocked_core
    me = await owner(core)
    one = await core.compute.create(me, "ns-one", SESSION)
    assert one.metadata == {"team": "a", NAMESPACE: "ns-one", CREATOR: me.subject}
    assert one.envs == {"GREETING": "hi"}
    assert one.timeout_s == 0 and one.deadline_at is not None
    assert (one.deadline_at - one.created_at).total_seconds() == 60
    clock.advance(1)
    two = await core.compute.create(me, "ns-one", replace(SESSION, lifetime_s=None))
    assert two.deadline_at is not None and (two.deadline_at - two.created_at).total_seconds() == 300
    other = await core.compute.create(me, "ns-two", SESSION)
    listed = await core.compute.list(me, "ns-one", include_stopped=False, limit=100)
    assert [sb.id for sb in listed] == [two.id, one.id]  # newest first
    assert [sb.id for sb in await core.compute.list(me, "ns-one", include_stopped=False, limit=1)] == [two.id]
    with pytest.raises(NotFound):
        await core.compute.get(me, "ns-two", one.id)
    with pytest.raises(NotFound):
        await core.compute.stop(me, "ns-two", one.id)
    stranger = Principal(org_id="org-zzzzzzzz", role=Role.OWNER)
    with pytest.raises(NotFound):
        await core.compute.get(stranger, "ns-one", one.id)
    await core.compute.stop(me, "ns-one", one.id)
    await core.compute.stop(me, "ns-one", one.id)  # idempotent
    assert [sb.id for sb in await core.compute.list(me, "ns-one", include_stopped=False, limit=100)] == [
        two.id
    ]
    everything = await core.compute.list(me, "ns-one", include_stopped=True, limit=100)
    assert {sb.id for sb in everything} == {one.id, two.id}
    with pytest.raises(Conflict):
        await core.compute.exec(me, "ns-one", one.id, Command(("true",)))
    assert (await core.compute.get(me, "ns-two", other.id)).status is SandboxStatus.RUNNING
    await core.lifecycle.pause(me, other.id)  # through another surface
    assert (await core.compute.exec(me, "ns-two", other.id, Command(("true",)))).result.exit_code == 0
    assert (await core.compute.get(me, "ns-two", other.id)).status is SandboxStatus.RUNNING  # resumed


async def test_the_per_user_cap_counts_live_sessions_of_every_namespace(core: Core) -> None:
    me = await owner(core)
    capped = ComputeService(core.sandboxes, core.commands, core.kill_switch, per_user=2)
    first = await capped.create(me, "a", SESSION)
    await capped.create(me, "b", SESSION)
    with pytest.raises(Conflict) as refused:
        await capped.create(me, "c", SESSION)
    assert refused.value.field == "compute_sessions_per_user"
    await capped.stop(me, "a", first.id)
    await capped.create(me, "c", SESSION)  # room again


async def test_the_kill_switch_refuses_a_create(core: Core) -> None:
    me = await owner(core)
    core.kill_switch.engage(me.org_id)
    try:
        with pytest.raises(Forbidden, match="kill switch"):
            await core.compute.create(me, "ns", SESSION)
    finally:
        core.kill_switch.release(me.org_id)
    assert await core.compute.list(me, "ns", include_stopped=True, limit=100) == []


@pytest.mark.parametrize(
    ("new", "field"),
    [
        (replace(SESSION, lifetime_s=0), "timeout_seconds"),
        (replace(SESSION, lifetime_s=3601), "timeout_seconds"),
        (replace(SESSION, metadata={"user_id": "me"}), "metadata"),
        (replace(SESSION, metadata={"run_id": "r"}), "metadata"),
        (replace(SESSION, metadata={"copass.sandbox_id": "x"}), "metadata"),
        (replace(SESSION, env_vars={"1BAD": "x"}), "env_vars"),
    ],
)
async def test_bad_creates_name_the_field(core: Core, new: NewSession, field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await core.compute.create(await owner(core), "ns", new)
    assert refused.value.field == field


async def test_an_unknown_template_is_not_found(core: Core) -> None:
    with pytest.raises(NotFound):
        await core.compute.create(await owner(core), "ns", replace(SESSION, template="no-such-template"))


@pytest.mark.parametrize(
    ("command", "field"),
    [(Command(()), "cmd"), (Command(("",)), "cmd"), (Command(("true",), timeout_s=0), "timeout_seconds")],
)
async def test_bad_execs_name_the_field(core: Core, command: Command, field: str) -> None:
    me = await owner(core)
    session = await core.compute.create(me, "ns", SESSION)
    with pytest.raises(InvalidInput) as refused:
        await core.compute.exec(me, "ns", session.id, command)
    assert refused.value.field == field


async def test_a_session_past_its_deadline_runs_nothing(clocked_core: Core, clock: FakeClock) -> None:
    core = clocked_core
    me = await owner(core)
    session = await core.compute.create(me, "ns", replace(SESSION, lifetime_s=5))
    clock.advance(5)
    with pytest.raises(Conflict, match="stopped"):
        await core.compute.exec(me, "ns", session.id, Command(("true",)))


def test_output_is_capped_in_all_stdout_first() -> None:
    big = ExecResult(0, b"o" * (OUTPUT_CAP - 10), b"e" * 100)
    capped = _capped(big)
    assert (len(capped.stdout), len(capped.stderr), capped.truncated) == (OUTPUT_CAP - 10, 10, True)
    small = ExecResult(3, b"out", b"err")
    assert _capped(small) is small


async def test_exec_feeds_stdin_and_cuts_its_timeout_to_the_life_left(process_core: Core) -> None:
    core = process_core
    me = await owner(core)
    session = await core.compute.create(me, "ns", replace(SESSION, lifetime_s=3))
    fed = await core.compute.exec(
        me, "ns", session.id, Command(("sh", "-c", "tr a-z A-Z; echo $GREETING >&2"), "hello\n")
    )
    assert (fed.result.exit_code, fed.result.stdout, fed.result.stderr) == (0, b"HELLO\n", b"hi\n")
    assert fed.elapsed_ms >= 0
    no_stdin = await core.compute.exec(me, "ns", session.id, Command(("cat",)))
    assert (no_stdin.result.exit_code, no_stdin.result.stdout) == (0, b"")
    cut = await core.compute.exec(me, "ns", session.id, Command(("sleep", "30"), timeout_s=600))
    assert (cut.result.exit_code, cut.result.timed_out) == (124, True)
    assert cut.elapsed_ms < 10_000  # the ~2 s left of the session (3 s, less the margin), not the 600 asked
    with pytest.raises(Conflict, match="stop"):  # less than the margin left, or stopped
        await core.compute.exec(me, "ns", session.id, Command(("true",)))
