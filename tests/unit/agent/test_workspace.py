"""What the agent does for a workspace (the xgen surface): directory trees watched with
inotify (``file.watch``), file ops confined ``within`` a directory with symlinks
resolved, files written for an ``owner``, sessions as a ``user``, the disk's usage."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.domain import FileChange, SessionSpec, Stream
from corral.errors import Forbidden, InvalidInput, NotFound
from tests.support.agent import RunningAgent, running_agent


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    with running_agent() as running:
        yield running


@pytest.fixture
def workspace(agent: RunningAgent) -> Path:
    path = agent.workdir / "ws"
    path.mkdir()
    return path


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def changes_until(changes: AsyncIterator[FileChange], last: tuple[str, str]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    while last not in seen:
        change = await asyncio.wait_for(anext(changes), 5)
        seen.append((change.path, change.kind))
    return seen


async def test_watch_reports_a_tree_as_it_changes(agent: RunningAgent, workspace: Path) -> None:
    client = agent.client()
    async with client.watch(str(workspace)) as changes:
        (workspace / "a.txt").write_text("x")
        (workspace / "sub").mkdir()
        nested = workspace / "sub" / "deep.txt"
        await client.write_file(str(nested), one(b"written by the agent"))  # its temp file is not reported
        os.unlink(workspace / "a.txt")
        seen = await changes_until(changes, (str(workspace / "a.txt"), "deleted"))
    a = str(workspace / "a.txt")
    assert seen.index((a, "created")) < seen.index((a, "modified")) < seen.index((a, "deleted"))
    assert (str(workspace / "sub"), "created") in seen
    assert (str(nested), "created") in seen  # a directory made after the watch began is watched
    assert not [path for path, _ in seen if ".corral-" in path]
    assert "internal error" not in agent.log_text()


async def test_watch_sees_what_a_new_directory_held_before_its_watch(
    agent: RunningAgent, workspace: Path
) -> None:
    async with agent.client().watch(str(workspace)) as changes:
        made = await asyncio.create_subprocess_exec(
            "sh", "-c", f"mkdir -p {workspace}/d/e && echo x > {workspace}/d/e/f"
        )
        assert await made.wait() == 0
        seen = await changes_until(changes, (str(workspace / "d" / "e" / "f"), "created"))
    assert (str(workspace / "d"), "created") in seen


async def test_watch_of_what_is_not_a_directory(agent: RunningAgent, workspace: Path) -> None:
    (workspace / "file").write_text("x")
    client = agent.client()
    with pytest.raises(InvalidInput):
        async with client.watch(str(workspace / "file")):
            pass
    with pytest.raises(NotFound):
        async with client.watch(str(workspace / "missing")):
            pass


async def test_within_refuses_links_that_lead_out(agent: RunningAgent, workspace: Path) -> None:
    outside = agent.workdir / "secret.txt"
    outside.write_text("not yours")
    (workspace / "link").symlink_to(outside)
    (workspace / "dir-link").symlink_to(agent.workdir)
    client, within = agent.client(), str(workspace)
    with pytest.raises(Forbidden):
        await client.read_file(str(workspace / "link"), within=within)
    with pytest.raises(Forbidden):
        await client.write_file(str(workspace / "dir-link" / "new.txt"), one(b"x"), within=within)
    with pytest.raises(Forbidden):
        await client.remove(str(workspace / "dir-link" / "secret.txt"), within=within)
    with pytest.raises(Forbidden):
        await client.list_dir(str(workspace / "dir-link"), within=within)
    assert outside.read_text() == "not yours"
    assert not (agent.workdir / "new.txt").exists()
    (workspace / "inner").symlink_to(workspace / "real", target_is_directory=True)
    (workspace / "real").mkdir()
    await client.write_file(str(workspace / "inner" / "ok.txt"), one(b"fine"), within=within)
    assert (workspace / "real" / "ok.txt").read_bytes() == b"fine"
    assert await client.stat(str(workspace), within=within) is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
async def test_write_for_an_owner_makes_its_parents_theirs(agent: RunningAgent, workspace: Path) -> None:
    target = workspace / "new" / "dirs" / "file.txt"
    await agent.client().write_file(str(target), one(b"x"), owner=4321)
    for path in (target, target.parent, target.parent.parent):
        assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321), path
    assert workspace.stat().st_uid == os.getuid()  # what existed stays as it was


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
async def test_a_session_runs_as_its_user(agent: RunningAgent) -> None:
    client: AgentClient = agent.client()
    info = await client.start_session("es-user", SessionSpec("id", ("-u",), user="4321"))
    output = b""
    async with client.attach(info.id) as attachment:
        async for event in attachment:
            if event.stream == Stream.STDOUT:
                output += event.data
            if event.stream == Stream.EXIT:
                assert event.exit_code == 0
    assert output == b"4321\n"


async def test_disk_says_total_and_used(agent: RunningAgent) -> None:
    disk = await agent.client().disk()
    st = os.statvfs("/")
    assert abs(disk.used - (st.f_blocks - st.f_bfree) * st.f_frsize) < 64 << 20  # / is busy: some slack
    assert abs(disk.total - disk.used - st.f_bavail * st.f_frsize) < 64 << 20
    assert 0 < disk.used <= disk.total <= st.f_blocks * st.f_frsize


async def test_held_output_waits_for_the_first_attach(agent: RunningAgent) -> None:
    client = agent.client()
    script = ("-c", "head -c 4194304 /dev/zero; echo end")
    await client.start_session("es-loose", SessionSpec("sh", script))
    await client.start_session("es-held", SessionSpec("sh", script, hold_output=True))
    deadline = asyncio.get_running_loop().time() + 10
    while (await client.session("es-loose")).running:  # its output went to the scrollback and on
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    assert (await client.session("es-held")).running  # 4 MiB cannot pass a 1 MiB scrollback
    received = 0
    async with client.attach("es-held") as attachment:
        async for event in attachment:
            if event.stream in (Stream.STDOUT, Stream.STDERR):
                received += len(event.data)
            if event.stream == Stream.EXIT:
                assert event.exit_code == 0
    assert received == 4194304 + len(b"end\n")
