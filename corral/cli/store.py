"""The CLI's composition root: the adapters its local commands work on directly (keys,
org, users, killswitch on this node's store; template builds on this node's template
store). No other module of ``corral.cli`` imports an adapter (tests/unit/test_layers.py).

Stores are opened (and migrated) for one piece of work, then closed. Safe while
``corral serve`` runs on the same store: SQLite in WAL mode takes concurrent writers
from several processes, and PostgreSQL is shared by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from corral.cli.local import local_settings
from corral.ports import KeyStore, SwitchStore, Templates, UserStore
from corral.settings import Settings
from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.kill_switches import SqlSwitchStore
from corral.store.users import SqlUserStore

T = TypeVar("T")


@dataclass(frozen=True)
class LocalStores:
    """The node's stores, for one piece of work."""

    keys: KeyStore
    users: UserStore
    switches: SwitchStore


def with_stores(
    data_dir: Path | None, database_url: str | None, work: Callable[[LocalStores, Settings], Awaitable[T]]
) -> T:
    """Run ``work`` on the store the flags (over ``CORRAL_*``) name; its result."""
    settings = local_settings(data_dir=data_dir, database_url=database_url)

    async def go() -> T:
        db = await Database.open(settings.db_url)
        try:
            return await work(LocalStores(SqlKeyStore(db), SqlUserStore(db), SqlSwitchStore(db)), settings)
        finally:
            await db.close()

    return asyncio.run(go())


def open_templates(settings: Settings) -> Templates:
    """The node's template store; ImportError where the builder cannot load."""
    from corral.runtime.templates import TemplateStore

    store: Templates = TemplateStore(settings)
    return store
