"""The in-memory fakes (runtime/memory.py) keep the ports' contracts that service tests
rely on: ids, Conflict and idempotency, an agent that does not answer while its sandbox
is stopped, file errors, sessions with scrollback, hibernation keeping only files, and
snapshots that restore and fork."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.domain import ExecRequest, Limits, RuntimeState, SandboxSpec, SessionSpec, Stream, Template
from corral.errors import AgentError, Conflict, InvalidInput, NotFound
from corral.ports import Agent, Runtime, Snapshotter
from corral.runtime.memory import FakeRuntime, FakeSnapshots

SID = "sb-fake000000000001"
SPEC = SandboxSpec(SID, Template("base", "static", "/", datetime.now(UTC)), Limits(), {"A": "1"})


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read(agent: Agent, path: str) -> bytes:
    async with await agent.read_file(path) as chunks:
        return b"".join([chunk async for chunk in chunks])


@pytest.fixture
async def runtime() -> FakeRuntime:
    rt = FakeRuntime()
    await rt.create(SPEC)
    return rt


async def test_ids_conflicts_and_idempotent_destroy(runtime: FakeRuntime) -> None:
    port: Runtime = runtime
    with pytest.raises(Conflict):
        await port.create(SPEC)
    with pytest.raises(InvalidInput):
        port.agent("../etc")
    assert await port.state(SID) == RuntimeState.RUNNING
    assert await port.reclaim({SID}) == [] and await port.list_ids() == {SID}
    await port.destroy(SID)
    await port.destroy(SID)
    assert await port.state(SID) == RuntimeState.MISSING
    with pytest.raises(AgentError):
        await port.agent(SID).ping()


async def test_commands_get_the_sandbox_envs_and_unknown_ones_exit_127(runtime: FakeRuntime) -> None:
    agent = runtime.agent(SID)
    await agent.set_envs({"B": "2"})
    result = await agent.exec(ExecRequest("env", envs={"A": "x"}))
    assert result.stdout == b"A=x\nB=2\n"
    assert (await agent.exec(ExecRequest("exit", ("3",)))).exit_code == 3
    missing = await agent.exec(ExecRequest("bash", ("-c", "true")))
    assert missing.exit_code == 127 and b"not found" in missing.stderr


async def test_files_keep_the_agents_errors(runtime: FakeRuntime) -> None:
    agent = runtime.agent(SID)
    assert await agent.write_file("/root/a/b.txt", body(b"hi")) == 2
    assert await read(agent, "/root/a/b.txt") == b"hi"
    entry = await agent.stat("/root/a")
    assert entry is not None and entry.is_dir
    assert await agent.stat("/nothing") is None
    with pytest.raises(NotFound):
        await read(agent, "/root/none")
    with pytest.raises(InvalidInput):
        await read(agent, "/root/a")
    with pytest.raises(InvalidInput):
        await agent.write_file("/root/a/b.txt/c", body(b""))
    with pytest.raises(InvalidInput):
        await agent.list_dir("relative")
    for name in "cba":
        await agent.write_file(f"/root/d/{name}", body(b""))
    page = await agent.list_dir("/root/d", limit=2)
    assert [e.name for e in page.entries] == ["a", "b"] and page.next == "b"
    assert [e.name for e in (await agent.list_dir("/root/d", after="b")).entries] == ["c"]
    await agent.remove("/root/d")
    with pytest.raises(NotFound):
        await agent.remove("/root/d")


async def test_sessions_replay_their_scrollback_and_end_when_killed(runtime: FakeRuntime) -> None:
    agent = runtime.agent(SID)
    done = await agent.start_session("es-1", SessionSpec("echo", ("hi",)))
    assert not done.running and done.exit_code == 0
    async with agent.attach("es-1") as attached:
        assert [(e.stream, e.data) for e in [e async for e in attached]][:2] == [
            (Stream.STDOUT, b"hi\n"),
            (Stream.SCROLLBACK_END, b""),
        ]
    await agent.start_session("es-2", SessionSpec("sleep", ("100",)))
    async with agent.attach("es-2") as attached:
        await attached.send_stdin(b"ping")
        await agent.kill_session("es-2", 9)
        events = [e async for e in attached]
    assert [e.stream for e in events] == [Stream.SCROLLBACK_END, Stream.STDOUT, Stream.EXIT]
    assert events[1].data == b"ping" and events[2].exit_code == 137
    with pytest.raises(Conflict):
        await agent.start_session("es-2", SessionSpec("sleep"))


async def test_hibernate_keeps_files_not_processes_and_snapshots_restore_and_fork(
    runtime: FakeRuntime, tmp_path: Path
) -> None:
    snapshots: Snapshotter = FakeSnapshots(runtime)
    agent = runtime.agent(SID)
    await agent.write_file("/root/f", body(b"v1"))
    await agent.start_session("es-1", SessionSpec("sleep"))
    assert await snapshots.snapshot(SID, tmp_path) == 2
    await agent.write_file("/root/f", body(b"v2"))
    with pytest.raises(Conflict):  # only a stopped sandbox's disk is swapped
        await snapshots.restore(SID, tmp_path)
    assert await runtime.hibernate(SID) == 2
    with pytest.raises(AgentError):
        await agent.ping()
    await snapshots.restore(SID, tmp_path)
    await runtime.resume(SPEC)
    assert await read(agent, "/root/f") == b"v1" and await agent.list_sessions() == []
    fork = "sb-fake000000000002"
    await snapshots.fork(fork, tmp_path)
    with pytest.raises(Conflict):
        await snapshots.fork(fork, tmp_path)
    assert await runtime.state(fork) == RuntimeState.STOPPED and await snapshots.has_disk(fork)
    await runtime.resume(SandboxSpec(fork, SPEC.template, Limits()), forked=True)
    assert await read(runtime.agent(fork), "/root/f") == b"v1"
