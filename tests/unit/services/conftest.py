"""A Core over SQLite in a temp dir: on the in-memory runtime (``core``: no processes,
``runtime/memory.py``) or, for tests of what only a real agent does (a shell, output at
the source), on the process runtime (``process_core``: the real agent, no isolation);
and small helpers the service tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.auth.principal import Principal
from corral.clock import SYSTEM, Clock
from corral.core import Core
from corral.domain import Checkpoint, CheckpointStatus, ExecRequest
from corral.ports import Runtime
from corral.runtime.memory import FakeRuntime
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.settings import Settings
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async


async def open_core(
    tmp_path: Path, clock: Clock = SYSTEM, runtime: Runtime | None = None, **settings: Any
) -> Core:
    """A Core on ``runtime`` (a new ``FakeRuntime`` by default)."""
    values: dict[str, Any] = {"runtime": "process", "reaper_interval_s": 3600, **settings}
    return await Core.open(
        Settings(data_dir=tmp_path, **values),
        runtime=runtime or FakeRuntime(),
        templates=StaticTemplates(),
        clock=clock,
    )


async def close_core(core: Core) -> None:
    """Destroy every sandbox the test left (idempotent), then close."""
    for sb in await core.sandboxes.store.list_all():
        await core.runtime.destroy(sb.id)
    await core.close()


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    c = await open_core(tmp_path)
    yield c
    await close_core(c)


@pytest.fixture
async def process_core(tmp_path: Path) -> AsyncIterator[Core]:
    """``core`` on the process runtime: sandboxes are the real agent, run as local
    processes (their "disk" is ``tmp_path/run/<id>/home``)."""
    c = await open_core(tmp_path, runtime=ProcessRuntime(tmp_path / "run"))
    yield c
    await close_core(c)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def clocked_core(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Core]:
    """``core`` on ``clock``: idle time, deadlines and holds pass when the test advances it."""
    c = await open_core(tmp_path, clock)
    yield c
    await close_core(c)


async def owner(core: Core) -> Principal:
    assert core.bootstrap_key
    return await core.auth.authenticate_key(core.bootstrap_key)


async def sh(core: Core, me: Principal, sandbox_id: str, script: str) -> str:
    result = await core.commands.run(me, sandbox_id, ExecRequest("sh", ("-c", script)))
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def write(core: Core, me: Principal, sandbox_id: str, path: str, text: str) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield text.encode()

    await core.files.write(me, sandbox_id, path, body())


async def read(core: Core, me: Principal, sandbox_id: str, path: str) -> str:
    async with await core.files.read(me, sandbox_id, path) as chunks:
        return b"".join([chunk async for chunk in chunks]).decode()


async def ls(core: Core, me: Principal, sandbox_id: str, path: str = "/root") -> list[str]:
    entries, _ = await core.files.list(me, sandbox_id, path)
    return [entry.name for entry in entries]


async def ready(core: Core, me: Principal, checkpoint: Checkpoint) -> Checkpoint:
    """The checkpoint once its background persist is done."""

    async def done() -> Checkpoint | None:
        found = await core.checkpoints.get(me, checkpoint.id)
        return None if found.status is CheckpointStatus.PROCESSING else found

    await eventually_async(done, 10, "checkpoint never left processing")
    found = await done()
    assert found is not None
    return found
