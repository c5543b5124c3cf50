"""The store on PostgreSQL: the same tests as on SQLite (``tests/unit/store/test_store.py``,
``tests/unit/store/test_audit_store.py``, collected here again with this module's ``db``),
plus migrations run twice and the append-only trigger function of migration 0003.

A throwaway server: ``initdb`` into a temp dir as the ``postgres`` user (initdb refuses
root), listening on a unix socket in that dir only (no TCP), fsync off; one fresh
database per test; everything removed at the end. Needs Debian's ``postgresql``
package (``scripts/install-deps.sh``) and root (to run as ``postgres``).
"""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.sandboxes import SqlSandboxStore
from tests.support.conditions import eventually
from tests.unit.store.test_audit_store import (  # noqa: F401  (collected here, on PostgreSQL)
    test_pages_follow_the_cursor_both_ways_and_stay_in_their_org,
    test_sql_cannot_change_or_remove_audit_rows,
)
from tests.unit.store.test_store import sandbox as a_sandbox
from tests.unit.store.test_store import (  # noqa: F401  (collected here, on PostgreSQL)
    test_a_stale_write_cannot_bring_a_killed_sandbox_back,
    test_adding_an_id_twice_is_a_conflict,
    test_holdings_count_an_orgs_live_sandboxes_and_sum_the_nodes_promises,
    test_live_only_and_update,
    test_round_trip_and_tenancy,
    test_touch_moves_last_active,
)

pytestmark = pytest.mark.integration

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
PORT = 5432  # only names the socket file: no TCP listener
START_S = 30


@pytest.fixture(scope="module")
def postgres() -> Iterator[Path]:
    """The socket directory of a running throwaway server."""
    if not BIN:
        pytest.fail("PostgreSQL is not installed (Debian package postgresql; make test installs it)")
    pg = Path(BIN[-1])
    user = pwd.getpwnam("postgres")
    base = Path(tempfile.mkdtemp(prefix="corral-pg-"))
    os.chown(base, user.pw_uid, user.pw_gid)
    as_postgres = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    subprocess.run(
        [*as_postgres, pg / "initdb", "-D", data, "-A", "trust", "-U", "corral", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    server = subprocess.Popen(
        [*as_postgres, pg / "postgres", "-D", data, "-k", base, "-p", str(PORT)]
        + ["-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = [pg / "pg_isready", "-q", "-h", str(base), "-p", str(PORT), "-U", "corral", "-d", "postgres"]
        # the socket file appears before the server accepts ("the database system is
        # starting up"): wait until pg_isready says it accepts connections

        def accepts() -> bool:
            assert server.poll() is None, "postgres exited at start"
            return subprocess.run(ready, check=False).returncode == 0

        eventually(accepts, START_S, "postgres did not start")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)


async def _admin(socket_dir: Path, sql: str) -> None:
    conn = await asyncpg.connect(user="corral", database="postgres", host=str(socket_dir), port=PORT)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def fresh_url(postgres: Path) -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    name = f"t_{secrets.token_hex(6)}"
    await _admin(postgres, f"CREATE DATABASE {name}")
    yield f"postgresql+asyncpg://corral@/{name}?host={postgres}&port={PORT}"
    await _admin(postgres, f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def db(fresh_url: str) -> AsyncIterator[Database]:
    """What the imported tests take as ``db``: migrated, with the two orgs they use."""
    database = await Database.open(fresh_url)
    keys = SqlKeyStore(database)
    await keys.add_org("org-aaaaaaaa", "a")
    await keys.add_org("org-bbbbbbbb", "b")
    yield database
    await database.close()


async def test_it_is_postgresql_and_migrations_run_twice(fresh_url: str) -> None:
    first = await Database.open(fresh_url)
    assert first.engine.dialect.name == "postgresql"
    await first.close()
    again = await Database.open(fresh_url)  # at head already: nothing to do, no error
    async with again.engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        tables = set(
            (
                await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
            ).scalars()
        )
    await again.close()
    assert version and {"sandboxes", "events", "orgs", "api_keys"} <= tables


async def test_concurrent_writers_keep_every_row(db: Database) -> None:
    """Many sessions at once (PostgreSQL has no single writer lock): nothing lost."""

    store = SqlSandboxStore(db)
    ids = [f"sb-{n:08d}" for n in range(40)]
    await asyncio.gather(*(store.add(a_sandbox(sid, "org-aaaaaaaa")) for sid in ids))
    assert sorted(s.id for s in await store.list("org-aaaaaaaa")) == ids
