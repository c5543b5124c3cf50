"""The local store, for commands that work on this node's data directly (org, users,
killswitch): opened (and migrated) for one piece of work, then closed.

Safe while ``corral serve`` runs on the same store: SQLite in WAL mode takes concurrent
writers from several processes, and PostgreSQL is shared by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from corral.cli.local import local_settings
from corral.settings import Settings
from corral.store.database import Database

T = TypeVar("T")


def with_database(
    data_dir: Path | None, database_url: str | None, work: Callable[[Database, Settings], Awaitable[T]]
) -> T:
    """Run ``work`` on the store the flags (over ``CORRAL_*``) name; its result."""
    settings = local_settings(data_dir=data_dir, database_url=database_url)

    async def go() -> T:
        db = await Database.open(settings.db_url)
        try:
            return await work(db, settings)
        finally:
            await db.close()

    return asyncio.run(go())
