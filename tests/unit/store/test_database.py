"""The SQLite engine's pool: a connection goes back rolled back only when a transaction
is still open on it (``database._reset_sqlite``); ``Database.run``'s transactions. A
real SQLite file through the engines' own pools and drivers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from corral.store.database import Database


async def test_a_transaction_left_open_is_rolled_back_when_its_connection_returns(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        async with db.engine.connect() as conn:
            # begun and written below the engine, which knows of no transaction to end
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            await driver.execute("BEGIN")
            await driver.execute("INSERT INTO t VALUES (1)")
            assert driver.in_transaction
        async with db.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            assert not driver.in_transaction  # every pooled connection: none holds the lock
        async with db.engine.begin() as conn:  # would wait out busy_timeout on a held lock
            await conn.execute(text("INSERT INTO t VALUES (2)"))
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT x FROM t"))).scalars().all() == [2]
    finally:
        await db.close()


async def test_committed_work_stays_committed(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        for x in range(3):
            async with db.session() as s, s.begin():
                await s.execute(text("INSERT INTO t VALUES (:x)"), {"x": x})
        async with db.session() as s:
            assert (await s.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all() == [0, 1, 2]
    finally:
        await db.close()


@pytest.fixture(params=["file", "memory"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite file (``run`` on the store's thread) and SQLite in memory (``run``
    through the async engine)."""
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}"
        if request.param == "file"
        else "sqlite+aiosqlite:///:memory:"
    )
    database = await Database.open(url)
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield database
    await database.close()


async def rows(db: Database) -> list[int]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT x FROM t ORDER BY x"))).scalars().all())


async def test_run_commits_what_its_work_did_and_hands_back_its_result(db: Database) -> None:
    def work(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t VALUES (1), (2)"))
        return int(conn.execute(text("SELECT count(*) FROM t")).scalar_one())

    assert await db.run(work) == 2
    assert await rows(db) == [1, 2]  # seen through the other engine: committed


async def test_run_rolls_back_work_that_raised_and_raises_its_error(db: Database) -> None:
    def work(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (3)"))
        raise LookupError("no")

    with pytest.raises(LookupError, match="no"):
        await db.run(work)
    assert await rows(db) == []
    await db.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (4)")))  # the lock was let go
    assert await rows(db) == [4]


async def test_a_cancelled_run_ends_its_transaction_first(db: Database) -> None:
    began = threading.Event()

    def slow(conn: Connection) -> None:
        conn.execute(text("INSERT INTO t VALUES (5)"))
        began.set()
        time.sleep(0.3)

    task = asyncio.create_task(db.run(slow))
    await asyncio.to_thread(began.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await rows(db) == [5]  # it ran to its end, committed, before the cancel was raised


async def test_closing_twice_is_closing_once(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    await db.close()
    await db.close()  # the store's thread is gone: no work is handed to it again
    # a late caller still gets an answer, through the async engine (it reconnects)
    assert await db.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one()) == 1
    await db.close()


async def test_a_run_handed_to_the_store_thread_before_a_close_still_runs(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))
    began = threading.Event()

    def slow(conn: Connection) -> None:
        began.set()
        time.sleep(0.2)
        conn.execute(text("INSERT INTO t VALUES (6)"))

    first = asyncio.create_task(db.run(slow))
    await asyncio.to_thread(began.wait, 5)
    queued = asyncio.create_task(db.run(lambda conn: conn.execute(text("INSERT INTO t VALUES (7)"))))
    await asyncio.sleep(0)  # handed to the thread, behind the first
    await db.close()
    await asyncio.gather(first, queued)
    assert await rows(db) == [6, 7]
    await db.close()
