"""The server's budget of command output (corral.services.output), with the real agent
as a local process where a command runs: a cap per stream dropped at the source, a
floor every command keeps, one budget for all, finished results reclaimed first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.core import Core
from corral.domain import ExecRequest, Stream
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.output import OutputBudget
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.support.agent import RunningAgent, running_agent
from tests.support.conditions import eventually_async


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    with running_agent() as running:
        yield running


OUT = Stream.STDOUT


def sh(script: str) -> ExecRequest:
    return ExecRequest("sh", ("-c", script), timeout_s=30)


def test_the_floor_is_kept_whatever_the_budget() -> None:
    budget = OutputBudget(total=100, per_stream=10_000, floor=50)
    first, second = budget.hold("org-a"), budget.hold("org-b")
    assert first.grant(OUT, 70) == 70  # 50 free + 20 borrowed
    assert budget.used == 20
    assert second.grant(OUT, 150) == 100  # its own 50, and its share: 50
    assert budget.used == 70 and second.grant(OUT, 10) == 0
    first.release()
    first.release()  # idempotent
    assert budget.used == 50 and budget.by_org == {"org-b": 50}


def test_each_stream_has_its_floor() -> None:
    budget = OutputBudget(total=0, per_stream=10_000, floor=50)
    hold = budget.hold("org-a")
    assert hold.grant(OUT, 80) == 50 and hold.grant(OUT, 10) == 0
    assert hold.grant(Stream.STDERR, 5) == 5 and hold.kept == 55


def test_one_org_holds_at_most_its_share_and_the_others_keep_the_rest() -> None:
    budget = OutputBudget(total=100, per_stream=10_000, floor=0)
    floods = [budget.hold("org-a") for _ in range(3)]
    assert [hold.grant(OUT, 40) for hold in floods] == [40, 10, 0]  # half of the budget
    other = budget.hold("org-b")
    assert other.grant(OUT, 60) == 50 and budget.used == 100
    third = budget.hold("org-c")
    assert third.grant(OUT, 1) == 0  # the budget itself is spent
    for hold in floods:
        hold.release()
    assert third.grant(OUT, 30) == 30 and budget.by_org == {"org-b": 50, "org-c": 30}


def test_reclaimers_are_asked_before_a_grant_falls_short() -> None:
    budget = OutputBudget(total=100, per_stream=10_000, floor=0)
    cached = {"org-a": budget.hold("org-a"), "org-b": budget.hold("org-b")}  # oldest first
    assert [hold.grant(OUT, 50) for hold in cached.values()] == [50, 50]
    asked: list[tuple[int, str | None]] = []

    def reclaim(needed: int, org_id: str | None) -> int:
        asked.append((needed, org_id))
        hold = cached.pop(org_id or next(iter(cached)))  # the org's, or the oldest
        freed = hold.borrowed
        hold.release()
        return freed

    budget.reclaimers.append(reclaim)
    assert budget.hold("org-c").grant(OUT, 40) == 40  # the budget was spent: the oldest went
    assert asked == [(40, None)] and list(cached) == ["org-b"]
    assert budget.hold("org-b").grant(OUT, 20) == 20  # org-b's share was spent: its own went
    assert asked[1] == (20, "org-b") and cached == {}
    assert budget.by_org == {"org-c": 40, "org-b": 20}


def test_a_large_release_calls_on_release() -> None:
    calls: list[int] = []
    budget = OutputBudget(total=16 << 20, per_stream=8 << 20, floor=0, on_release=lambda: calls.append(1))
    small, large = budget.hold("org-a"), budget.hold("org-a")
    small.grant(OUT, 100)
    large.grant(OUT, 4 << 20)
    small.release()
    assert calls == []
    large.release()
    assert calls == [1]


async def test_the_agent_drops_output_beyond_the_limit_at_the_source(agent: RunningAgent) -> None:
    budget = OutputBudget(total=1 << 30, per_stream=1000, floor=0)
    hold = budget.hold("org-a")
    result = await AgentClient(agent.socket).exec(sh("head -c 3000000 /dev/zero; echo tail >&2"), hold)
    assert result.truncated and result.stdout == b"\0" * 1000 and result.stderr == b"tail\n"
    assert hold.kept == 1005 and budget.used == 1005
    hold.release()
    assert budget.used == 0


async def test_a_spent_budget_truncates_but_never_waits(agent: RunningAgent) -> None:
    budget = OutputBudget(total=10_000, per_stream=1 << 20, floor=1000)
    for org in ("org-a", "org-b"):
        budget.hold(org).grant(OUT, 5000 + 1000)
    assert budget.used == budget.total
    client = AgentClient(agent.socket)
    small = await client.exec(sh("echo small"), budget.hold("org-c"))
    assert small.stdout == b"small\n" and not small.truncated
    big = await client.exec(sh("head -c 500000 /dev/zero"), budget.hold("org-c"))
    assert big.truncated and big.stdout == b"\0" * 1000 and big.exit_code == 0


async def test_finished_async_results_give_their_output_back_first(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        runtime="process",
        reaper_interval_s=3600,
        exec_output_budget=600_000,  # one org holds half of it
        exec_output_floor=0,
    )
    core = await Core.open(settings, runtime=ProcessRuntime(tmp_path / "run"), templates=StaticTemplates())
    try:
        assert core.bootstrap_key
        me = await core.auth.authenticate_key(core.bootstrap_key)
        box = await core.sandboxes.create(me, CreateSandbox())
        first = await core.commands.run_async(me, box.id, sh("head -c 200000 /dev/zero; exit 7"))

        async def ended() -> bool:
            return not (await core.commands.result(me, box.id, first)).running

        await eventually_async(ended, 10)
        state = await core.commands.result(me, box.id, first)
        assert state.result is not None and len(state.result.stdout) == 200_000
        held = await core.commands.run_held(me, box.id, sh("head -c 250000 /dev/zero"))
        assert len(held.result.stdout) == 250_000 and not held.result.truncated
        dropped = await core.commands.result(me, box.id, first)
        assert dropped.result is not None and dropped.result.exit_code == 7
        assert dropped.result.truncated and dropped.result.stdout == b""
        assert core.commands.output.used == 250_000
        held.release()
        assert core.commands.output.used == 0
        await core.runtime.destroy(box.id)
    finally:
        await core.close()
