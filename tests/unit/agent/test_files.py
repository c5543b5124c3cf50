"""The agent's file reads and listings, against the real agent as a local process: a
read declares its length and never ends short, only regular files are read, and a
listing pages through a directory of any size (issue 9, "bad input and errors")."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from corral.agent.client import AgentClient
from corral.errors import AgentError, InvalidInput
from tests.support.agent import RunningAgent, running_agent


@pytest.fixture
def agent() -> Iterator[RunningAgent]:
    with running_agent() as running:
        yield running


@pytest.fixture
def client(agent: RunningAgent) -> AgentClient:
    return agent.client()


async def test_a_read_declares_the_files_length(agent: RunningAgent, client: AgentClient) -> None:
    target = agent.workdir / "data.bin"
    target.write_bytes(os.urandom(700_000))
    async with await client.read_file(str(target)) as chunks:
        assert chunks.length == 700_000
        assert sum([len(c) async for c in chunks]) == 700_000
    async with await client.read_file("/proc/self/status") as chunks:  # its size says 0
        assert chunks.length is None
        assert b"Name:" in b"".join([c async for c in chunks])


async def test_a_file_that_grows_during_the_read_is_cut_at_its_length(
    agent: RunningAgent, client: AgentClient
) -> None:
    target = agent.workdir / "growing.log"
    target.write_bytes(b"a" * 4_000_000)
    got = bytearray()
    async with await client.read_file(str(target)) as chunks:
        async for chunk in chunks:
            if not got:
                with target.open("ab") as more:
                    more.write(b"b" * 4_000_000)
            got += chunk
    assert chunks.length == 4_000_000 and bytes(got) == b"a" * 4_000_000


async def test_a_file_that_shrinks_during_the_read_fails_it(agent: RunningAgent, client: AgentClient) -> None:
    target = agent.workdir / "shrinking.bin"
    target.write_bytes(b"x" * 16_000_000)
    got = 0
    with pytest.raises(AgentError, match="shrank|after"):
        async with await client.read_file(str(target)) as chunks:
            async for chunk in chunks:
                if not got:
                    os.truncate(target, 1_000_000)
                got += len(chunk)
    assert got < 16_000_000


@pytest.mark.parametrize("path", ["/dev/null", "/dev/tty", "/dev/zero"])
async def test_only_regular_files_are_read(path: str, client: AgentClient) -> None:
    with pytest.raises(InvalidInput, match="not a regular file"):
        await client.read_file(path)


async def test_a_fifo_is_refused_without_opening_it(agent: RunningAgent, client: AgentClient) -> None:
    fifo = agent.workdir / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="not a regular file"):
        await client.read_file(str(fifo))


async def test_a_listing_pages_in_name_order(agent: RunningAgent, client: AgentClient) -> None:
    root = agent.workdir / "many"
    root.mkdir()
    names = sorted(f"{i:05d}-{'n' * 60}" for i in range(12_000))
    for name in names:
        (root / name).touch()
    first = await client.list_dir(str(root))
    assert 0 < len(first.entries) < 12_000  # one answer of the agent holds fewer
    assert first.next == first.entries[-1].name
    seen = [e.name for e in first.entries]
    after: str | None = first.next
    while after is not None:
        page = await client.list_dir(str(root), after, 5_000)
        assert len(page.entries) <= 5_000
        seen += [e.name for e in page.entries]
        after = page.next
    assert seen == names
    last = await client.list_dir(str(root), names[-3], 10)
    assert [e.name for e in last.entries] == names[-2:] and last.next is None
    small = await client.list_dir(str(root), None, 2)
    assert [e.name for e in small.entries] == names[:2] and small.next == names[1]


async def test_a_listing_refuses_bad_paging_fields(agent: RunningAgent, client: AgentClient) -> None:
    with pytest.raises(InvalidInput, match="limit"):
        await client.list_dir(str(agent.workdir), None, 0)
    with pytest.raises(InvalidInput, match="limit"):
        await client.list_dir(str(agent.workdir), None, 10_001)
