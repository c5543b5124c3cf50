"""The thread store's contract, held by the SQL store (corral/store/threads.py, on
SQLite through the migrations) and its in-memory fake (tests/support/threads.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.domain.runs import (
    ActionStatus,
    Author,
    DesktopInfo,
    DesktopStatus,
    Message,
    Prompts,
    Run,
    RunStatus,
    Thread,
    new_run_id,
    new_uuid,
)
from corral.errors import NotFound
from corral.services.runs import ThreadStore
from corral.store.database import Database
from corral.store.threads import SqlThreadStore
from tests.support.threads import MemoryThreadStore

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)


@pytest.fixture(params=["sql", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ThreadStore]:
    if request.param == "memory":
        yield MemoryThreadStore()
        return
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    try:
        yield SqlThreadStore(db)
    finally:
        await db.close()


async def test_threads_messages_and_runs_round_trip(store: ThreadStore) -> None:
    thread = Thread(new_uuid(), "org-a", "key:k1", Prompts("hi", "a goal", "sys"), 900, NOW)
    await store.add_thread(thread)
    desktop = DesktopInfo("sb-0123456789abcdef", "https://vnc", DesktopStatus.READY)
    await store.update_thread(replace(thread, desktop=desktop))
    assert await store.get_thread("org-a", thread.id) == replace(thread, desktop=desktop)
    with pytest.raises(NotFound):
        await store.get_thread("org-b", thread.id)

    run = Run(new_run_id(), thread.id, "org-a", RunStatus.QUEUED, "ab" * 32, NOW)
    await store.add_run(run)
    first = Message(new_uuid(), thread.id, Author.USER, "hi", NOW)
    action = Message(
        new_uuid(),
        thread.id,
        Author.ACTION,
        "click",
        NOW,
        run.id,
        {"action": "left_click", "coordinate": [1, 2]},
        ActionStatus.RUNNING,
    )
    await store.add_message(first)
    await store.add_message(action)
    await store.update_message(replace(action, status=ActionStatus.FAILED, detail="off the screen"))
    assert await store.messages(thread.id) == [
        first,
        replace(action, status=ActionStatus.FAILED, detail="off the screen"),
    ]

    assert [r.id for r in await store.unfinished_runs()] == [run.id]
    done = replace(run, status=RunStatus.COMPLETED, desktop=desktop, steps=3, started_at=NOW, finished_at=NOW)
    await store.update_run(done)
    assert await store.get_run(thread.id, run.id) == done
    assert await store.unfinished_runs() == []
    with pytest.raises(NotFound):
        await store.get_run(new_uuid(), run.id)
