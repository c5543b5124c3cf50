"""The server's budget of command output (corral.services.output), with the real agent
as a local process where a command runs: a cap per stream dropped at the source, a
floor every command keeps, one budget for all, finished results reclaimed first."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.domain import ExecRequest
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.core import Core
from corral.services.output import OutputBudget
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.unit.test_agent import RunningAgent, running_agent


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    with running_agent() as running:
        yield running


def sh(script: str) -> ExecRequest:
    return ExecRequest("sh", ("-c", script), timeout_s=30)


def test_the_floor_is_kept_whatever_the_budget() -> None:
    budget = OutputBudget(total=100, per_stream=10_000, floor=50)
    first, second = budget.hold(), budget.hold()
    assert first.grant(120) == 120  # 50 free + 70 borrowed
    assert budget.used == 70
    assert second.grant(100) == 80  # its own 50, and the 30 left
    assert budget.used == 100 and second.grant(10) == 0
    first.release()
    first.release()  # idempotent
    assert budget.used == 30 and second.grant(10) == 10


def test_reclaimers_are_asked_before_a_grant_falls_short() -> None:
    budget = OutputBudget(total=100, per_stream=10_000, floor=0)
    cached = budget.hold()
    assert cached.grant(100) == 100
    asked: list[int] = []

    def reclaim(needed: int) -> int:
        asked.append(needed)
        freed = cached.borrowed
        cached.release()
        return freed

    budget.reclaimers.append(reclaim)
    assert budget.hold().grant(40) == 40
    assert asked == [40] and budget.used == 40


def test_a_large_release_calls_on_release() -> None:
    calls: list[int] = []
    budget = OutputBudget(total=8 << 20, per_stream=8 << 20, floor=0, on_release=lambda: calls.append(1))
    small, large = budget.hold(), budget.hold()
    small.grant(100)
    large.grant(4 << 20)
    small.release()
    assert calls == []
    large.release()
    assert calls == [1]


async def test_the_agent_drops_output_beyond_the_limit_at_the_source(agent: RunningAgent) -> None:
    budget = OutputBudget(total=1 << 30, per_stream=1000, floor=0)
    hold = budget.hold()
    result = await AgentClient(agent.socket).exec(sh("head -c 3000000 /dev/zero; echo tail >&2"), hold)
    assert result.truncated and result.stdout == b"\0" * 1000 and result.stderr == b"tail\n"
    assert hold.kept == 1005 and budget.used == 1005
    hold.release()
    assert budget.used == 0


async def test_a_spent_budget_truncates_but_never_waits(agent: RunningAgent) -> None:
    budget = OutputBudget(total=10_000, per_stream=1 << 20, floor=1000)
    hog = budget.hold()
    hog.grant(10_000 + 1000)
    client = AgentClient(agent.socket)
    small = await client.exec(sh("echo small"), budget.hold())
    assert small.stdout == b"small\n" and not small.truncated
    big = await client.exec(sh("head -c 500000 /dev/zero"), budget.hold())
    assert big.truncated and big.stdout == b"\0" * 1000 and big.exit_code == 0


async def test_finished_async_results_give_their_output_back_first(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        runtime="process",
        reaper_interval_s=3600,
        exec_output_budget=300_000,
        exec_output_floor=0,
    )
    core = await Core.open(settings, runtime=ProcessRuntime(tmp_path / "run"), templates=StaticTemplates())
    try:
        assert core.bootstrap_key
        me = await core.auth.authenticate_key(core.bootstrap_key)
        box = await core.sandboxes.create(me, CreateSandbox())
        first = await core.commands.run_async(me, box.id, sh("head -c 200000 /dev/zero; exit 7"))
        while (state := await core.commands.result(me, box.id, first)).running:
            await asyncio.sleep(0.02)
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
