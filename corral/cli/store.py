"""The CLI's local commands (keys, org, users, killswitch on this node's store; template
builds on this node's template store) get what they work on from the composition root
(``corral.core``), loaded only when a command needs it. No module of ``corral.cli``
imports an adapter (tests/unit/test_layers.py).

Stores are opened (and migrated) for one piece of work, then closed. Safe while
``corral serve`` runs on the same store: SQLite in WAL mode takes concurrent writers
from several processes, and PostgreSQL is shared by design.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from corral.cli.local import local_settings
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores
    from corral.ports import Templates

T = TypeVar("T")


def with_stores(
    data_dir: Path | None, database_url: str | None, work: Callable[[LocalStores, Settings], Awaitable[T]]
) -> T:
    """Run ``work`` on the store the flags (over ``CORRAL_*``) name; its result."""
    settings = local_settings(data_dir=data_dir, database_url=database_url)

    async def go() -> T:
        from corral.core import local_stores

        async with local_stores(settings) as stores:
            return await work(stores, settings)

    return asyncio.run(go())


def open_templates(settings: Settings) -> Templates:
    """The node's template store; ImportError where the builder cannot load."""
    from corral.core import local_templates

    return local_templates(settings)
