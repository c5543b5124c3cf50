"""The store's engine: SQLite (WAL) in the data dir by default, PostgreSQL by URL.

``Database.open`` creates the engine and brings the schema to the newest Alembic
revision. SQL errors are translated at the repositories' boundary. A SQLite file holds
sandboxes' envs and key hashes in plain text: it is created 0600 before SQLite opens it
(SQLite gives its ``-wal`` and ``-shm`` files the database file's mode), and found
otherwise it is made 0600 again, with its ``-wal``, ``-shm`` and ``-journal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Dialect, Engine, PoolResetState, create_engine, event, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")
SQLITE_POOL = 20


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time in corral is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Database:
    def __init__(self, engine: AsyncEngine, local: Engine | None = None) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        # A SQLite file: the same file through the synchronous driver, on one thread (run)
        self._local = local
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="corral-store") if local else None

    @classmethod
    async def open(cls, url: str) -> Database:
        """Connect and migrate. Idempotent: an up-to-date schema is left as it is."""
        if url.startswith("sqlite"):
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
            private_sqlite(url)
        # SQLite: enough pooled connections for the requests in flight at once, so that
        # none opens (and PRAGMA-configures) a connection of its own under load.
        pooled = url.startswith("sqlite") and ":memory:" not in url
        options: dict[str, Any] = {"pool_size": SQLITE_POOL, "max_overflow": SQLITE_POOL} if pooled else {}
        if url.startswith("sqlite"):
            options["pool_reset_on_return"] = None  # _reset_sqlite instead
        engine = create_async_engine(url, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "reset", functools.partial(_reset_sqlite, engine.dialect))
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
        local = None
        if pooled:
            local = create_engine(engine.url.set(drivername="sqlite"), pool_size=2, max_overflow=0)
            event.listen(local, "connect", _sqlite_pragmas)
        return cls(engine, local)

    def session(self) -> AsyncSession:
        return self.sessions()

    async def run(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in one transaction, committed when it returns, rolled
        back when it raises (its error is raised here). For the hot paths: on a SQLite
        file it runs on the store's own thread with the synchronous driver, one
        hand-off a transaction, where the async engine takes a turn of its driver's
        thread for every call into it (a create's read costs ~2.2 ms of CPU that way,
        ~0.6 ms this way). Elsewhere (PostgreSQL, SQLite in memory) it runs through the
        async engine. A cancel waits for the transaction to end (committed or not),
        then is raised."""
        running: asyncio.Future[T]
        if self._local is None or self._thread is None:
            running = asyncio.ensure_future(self._async_transaction(work))
        else:  # the engine goes with the work: a close may come before the thread gets to it
            running = asyncio.get_running_loop().run_in_executor(
                self._thread, _transaction, self._local, work
            )
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await asyncio.wait([running])
            raise

    async def _async_transaction(self, work: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(work)

    async def close(self) -> None:
        """Close both engines and the store's thread; a second call does nothing more."""
        thread, local = self._thread, self._local
        if thread is not None and local is not None:
            self._thread = self._local = None  # a run from now on goes through the async engine
            await asyncio.get_running_loop().run_in_executor(thread, local.dispose)  # on their thread
            thread.shutdown(wait=True)
        await self.engine.dispose()


def _transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    with engine.begin() as conn:
        return work(conn)


def private_sqlite(url: str) -> None:
    """The SQLite file of ``url`` and its companions readable by their owner only
    (nothing for an in-memory database)."""
    name = make_url(url).database
    if not name or name == ":memory:" or name.startswith("file:"):
        return
    path = Path(name)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    for each in (path, *(path.with_name(path.name + tail) for tail in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            found = each.lstat()
            if stat.S_ISREG(found.st_mode) and stat.S_IMODE(found.st_mode) & 0o077:
                os.chmod(each, 0o600)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def _reset_sqlite(dialect: Dialect, dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
    """A SQLite connection goes back to the pool rolled back only if a transaction is
    still open on it. The pool's own reset rolls back every time, committed or not,
    and each call to the driver is a turn of its connection's thread."""
    if not state.terminate_only and dialect.get_driver_connection(dbapi_conn).in_transaction:
        dbapi_conn.rollback()


def _upgrade(conn: Connection) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
