"""``corral keys ...``: API keys, managed directly in this node's store.

These commands open the store the server uses (the data dir's SQLite, or
``--database-url``), which is safe while the server runs; they reach every org. An
org's owner or admin can also manage its own keys over HTTP (``/api/keys``).

Contracts: ``keys create`` prints the new raw key as the last line of its output (it
is shown once; only a hash is stored). The org ``default`` (the one the server's
bootstrap creates) is created on first use; any other org must exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.table import Table

from corral.auth.principal import Role
from corral.auth.service import AuthService
from corral.cli.console import out, print_table, reported, when
from corral.cli.local import DatabaseOption, DataDirOption
from corral.cli.store import with_stores
from corral.domain import ApiKey, Org
from corral.domain.accounts import KEY_FORMAT
from corral.errors import NotFound
from corral.ids import new_id
from corral.ports import KeyStore
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores

app = typer.Typer(help="Manage API keys in this node's store.", no_args_is_help=True)

DEFAULT_ORG = "default"
OrgOption = Annotated[str, typer.Option("--org", help="Org name.")]
T = TypeVar("T")


def _with_store(
    data_dir: Path | None, database_url: str | None, work: Callable[[KeyStore], Awaitable[T]]
) -> T:
    async def on_keys(stores: LocalStores, _settings: Settings) -> T:
        return await work(stores.keys)

    return with_stores(data_dir, database_url, on_keys)


async def _org(keys: KeyStore, name: str, create: bool) -> Org:
    try:
        return await keys.org_by_name(name)
    except NotFound:
        if not (create and name == DEFAULT_ORG):
            raise
        return await keys.add_org(new_id("org"), name)


@app.command("create")
def create(
    role: Annotated[Role, typer.Option("--role", help="Role of the key.", case_sensitive=False)],
    name: Annotated[str, typer.Option("--name", help="A label for the key.")] = "",
    org: OrgOption = DEFAULT_ORG,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an API key; the key itself is the last line printed."""

    async def work(keys: KeyStore) -> str:
        owner = await _org(keys, org, create=True)
        # Creating keys never signs tokens, so the service needs no JWT secret here.
        new = await AuthService(keys, jwt_secret="").create_key(owner.id, role.value, name)
        label = f" {name!r}" if name else ""
        out.print(f"created {new.key.role} key{label} (id {new.key.id}, org {org}); it is shown only once:")
        return new.raw

    with reported():
        raw = _with_store(data_dir, database_url, work)
        out.print(raw)


@app.command("ls")
def ls(
    org: OrgOption = DEFAULT_ORG, data_dir: DataDirOption = None, database_url: DatabaseOption = None
) -> None:
    """List the API keys of an org (never their secrets)."""

    async def work(keys: KeyStore) -> list[ApiKey]:
        return await keys.list_keys((await _org(keys, org, create=False)).id)

    with reported():
        found = _with_store(data_dir, database_url, work)
        if not found:
            out.print(f"no keys in org {org}")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("ID", "ROLE", "NAME", "CREATED", "LAST USED", "STATUS"):
            table.add_column(column, no_wrap=True)
        for key in found:
            status = f"revoked {when(key.revoked_at)}" if key.revoked_at else "active"
            table.add_row(
                key.id, key.role, key.name or "-", when(key.created_at), when(key.last_used_at), status
            )
        print_table(table)


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="Key id (the part between ek_ and the next _), or the key.")],
    org: OrgOption = DEFAULT_ORG,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Revoke an API key (idempotent)."""
    match = KEY_FORMAT.match(key)
    key_id = match.group(1) if match else key

    async def work(keys: KeyStore) -> None:
        await keys.revoke((await _org(keys, org, create=False)).id, key_id)

    with reported():
        _with_store(data_dir, database_url, work)
        out.print(f"revoked {key_id}")
