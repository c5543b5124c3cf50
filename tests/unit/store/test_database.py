"""The SQLite engine's pool: a connection goes back rolled back only when a transaction
is still open on it (``database._reset_sqlite``). A real SQLite file through the
engine's own pool and driver."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

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
