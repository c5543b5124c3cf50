"""ProcessRuntime: the Runtime port with the real agent as a local process."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.domain import (
    EgressMode,
    EgressPolicy,
    ExecRequest,
    Limits,
    RuntimeState,
    SandboxSpec,
    SessionSpec,
    Template,
)
from corral.errors import Conflict, InvalidInput, NotFound, RuntimeFailure
from corral.ports import Runtime
from corral.runtime.process import ProcessRuntime
from tests.support.conditions import eventually_async, pid_gone

TEMPLATE = Template("base", "sha256:0", "/", datetime.now(UTC))


def spec(sandbox_id: str, **envs: str) -> SandboxSpec:
    return SandboxSpec(sandbox_id, TEMPLATE, Limits(), envs)


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="corral-proc-", dir="/tmp"))
    yield path
    for pid_file in path.glob("*/agent.pid"):  # never leave agents behind
        try:
            os.killpg(int(pid_file.read_text()), 9)
        except (OSError, ValueError):
            pass
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def runtime(state_dir: Path) -> AsyncIterator[ProcessRuntime]:
    runtime = ProcessRuntime(state_dir)
    yield runtime
    await runtime.reclaim(set())


async def test_create_runs_commands_with_the_sandbox_envs(runtime: ProcessRuntime, state_dir: Path) -> None:
    port: Runtime = runtime  # the fake satisfies the port
    assert port.name == "process" and await port.health() == {"runtime": "process", "ok": True}
    await runtime.create(spec("sb-aaaaaaaa", GREETING="hello"))
    assert await runtime.state("sb-aaaaaaaa") is RuntimeState.RUNNING
    result = await runtime.agent("sb-aaaaaaaa").exec(ExecRequest("sh", ("-c", "echo $GREETING; pwd")))
    assert result.stdout.decode().split() == ["hello", str(state_dir / "sb-aaaaaaaa" / "home")]
    assert await runtime.list_ids() == {"sb-aaaaaaaa"}
    assert await runtime.address("sb-aaaaaaaa") == "127.0.0.1"
    await runtime.set_egress("sb-aaaaaaaa", EgressPolicy(EgressMode.DENY_ALL))
    for call in (runtime.address("sb-missing0"), runtime.set_egress("sb-missing0", EgressPolicy())):
        with pytest.raises(NotFound):
            await call


async def test_destroy_kills_everything_and_is_idempotent(runtime: ProcessRuntime, state_dir: Path) -> None:
    await runtime.create(spec("sb-bbbbbbbb"))
    agent_pid = int((state_dir / "sb-bbbbbbbb" / "agent.pid").read_text())
    pid_file = state_dir / "sb-bbbbbbbb" / "home" / "s.pid"
    agent = runtime.agent("sb-bbbbbbbb")
    await agent.start_session("s", SessionSpec("sh", ("-c", f"echo $$ > {pid_file}; exec sleep 30")))
    await eventually_async(lambda: pid_file.exists() and pid_file.read_text().strip(), 5)
    session_pid = int(pid_file.read_text())
    await runtime.destroy("sb-bbbbbbbb")
    assert pid_gone(agent_pid) and pid_gone(session_pid)
    assert await runtime.state("sb-bbbbbbbb") is RuntimeState.MISSING
    assert not (state_dir / "sb-bbbbbbbb").exists()
    await runtime.destroy("sb-bbbbbbbb")
    await runtime.destroy("sb-neverexisted")


async def test_duplicate_and_invalid_ids(runtime: ProcessRuntime) -> None:
    await runtime.create(spec("sb-cccccccc"))
    with pytest.raises(Conflict):
        await runtime.create(spec("sb-cccccccc"))
    assert await runtime.state("sb-cccccccc") is RuntimeState.RUNNING
    for bad in ("../etc", "sb-UPPER123", "x"):
        with pytest.raises(InvalidInput):
            await runtime.state(bad)
        with pytest.raises(InvalidInput):
            runtime.agent(bad)


async def test_failed_start_leaves_nothing(state_dir: Path) -> None:
    runtime = ProcessRuntime(state_dir, python="/bin/false")
    with pytest.raises(RuntimeFailure):
        await runtime.create(spec("sb-dddddddd"))
    assert not (state_dir / "sb-dddddddd").exists()
    assert await runtime.list_ids() == set()


async def test_a_new_runtime_finds_running_agents(runtime: ProcessRuntime, state_dir: Path) -> None:
    await runtime.create(spec("sb-eeeeeeee"))
    agent_pid = int((state_dir / "sb-eeeeeeee" / "agent.pid").read_text())
    again = ProcessRuntime(state_dir)
    assert await again.state("sb-eeeeeeee") is RuntimeState.RUNNING
    await again.agent("sb-eeeeeeee").ping()
    os.kill(agent_pid, 9)

    async def stopped() -> bool:
        return await again.state("sb-eeeeeeee") is RuntimeState.STOPPED

    await eventually_async(stopped, 5)
    await again.destroy("sb-eeeeeeee")
    assert await again.state("sb-eeeeeeee") is RuntimeState.MISSING


async def test_reclaim_removes_all_but_kept(runtime: ProcessRuntime, state_dir: Path) -> None:
    await runtime.create(spec("sb-keep0000"))
    await runtime.create(spec("sb-drop0000"))
    (state_dir / "sb-leftover0").mkdir()
    assert await runtime.reclaim({"sb-keep0000"}) == ["sb-drop0000", "sb-leftover0"]
    assert await runtime.list_ids() == {"sb-keep0000"}
    await runtime.agent("sb-keep0000").ping()
