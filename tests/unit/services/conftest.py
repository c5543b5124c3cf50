"""A Core on the process runtime (the real agent, no isolation) over SQLite in a temp
dir, and small helpers the service tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.auth.principal import Principal
from corral.clock import SYSTEM, Clock
from corral.core import Core
from corral.domain import ExecRequest
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.settings import Settings
from tests.support.clock import FakeClock


async def open_core(tmp_path: Path, clock: Clock = SYSTEM, **settings: Any) -> Core:
    values: dict[str, Any] = {"runtime": "process", "reaper_interval_s": 3600, **settings}
    return await Core.open(
        Settings(data_dir=tmp_path, **values),
        runtime=ProcessRuntime(tmp_path / "run"),
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
