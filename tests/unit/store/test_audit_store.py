"""The events table: append-only in the store itself (migration 0003), paged by id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from corral.domain import Event
from corral.store.database import Database
from corral.store.events import SqlEventStore


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    yield database
    await database.close()


def event(n: int, org: str = "org-aaaaaaaa", sandbox: str = "sb-aaaaaaaaaaaaaaaa") -> Event:
    kind = "exec_started" if n % 2 else "file_written"
    return Event(at=datetime.now(UTC), org_id=org, kind=kind, sandbox_id=sandbox, key_id="k1", data={"n": n})


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'forged' WHERE id = 1",
        "UPDATE events SET data = '{}'",
        "DELETE FROM events WHERE id = 1",
        "DELETE FROM events",
    ],
)
async def test_sql_cannot_change_or_remove_audit_rows(db: Database, statement: str) -> None:
    store = SqlEventStore(db)
    await store.append([event(1), event(2)])
    with pytest.raises(DBAPIError, match="audit records are append-only"):
        async with db.engine.begin() as conn:
            await conn.execute(text(statement))
    page = await store.page("org-aaaaaaaa", newest=False)
    assert [(e.kind, e.data) for e in page.events] == [("exec_started", {"n": 1}), ("file_written", {"n": 2})]


async def test_pages_follow_the_cursor_both_ways_and_stay_in_their_org(db: Database) -> None:
    store = SqlEventStore(db)
    await store.append([event(n) for n in range(7)])
    await store.append([event(99, org="org-bbbbbbbb")])

    async def walk(newest: bool) -> list[object]:
        seen, cursor = [], None
        while True:
            page = await store.page("org-aaaaaaaa", limit=3, cursor=cursor, newest=newest)
            seen += [e.data["n"] for e in page.events]
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    assert await walk(newest=True) == [6, 5, 4, 3, 2, 1, 0]
    assert await walk(newest=False) == [0, 1, 2, 3, 4, 5, 6]
    odd = await store.page("org-aaaaaaaa", kinds=["exec_started"])
    assert [e.data["n"] for e in odd.events] == [5, 3, 1]
    other = await store.page("org-bbbbbbbb", sandbox_id="sb-aaaaaaaaaaaaaaaa")
    assert [e.data["n"] for e in other.events] == [99]
