"""``corral org ...``: orgs, in this node's store (there is no org API over HTTP).

Contracts: ``org create NAME`` prints the new org's id; a name that exists is an error.
Keys and users of an org are made with ``corral keys create --org NAME`` and
``corral users add --org NAME``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from corral.cli.console import CliError, out, print_table, reported, when
from corral.cli.local import DatabaseOption, DataDirOption
from corral.cli.store import with_stores
from corral.domain import Org
from corral.ids import new_id
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores

app = typer.Typer(help="Manage orgs in this node's store.", no_args_is_help=True)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Org name: letters, digits, . _ -", show_default=False)],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Create an org and print its id."""

    async def work(stores: LocalStores, _settings: Settings) -> Org:
        return await stores.keys.add_org(new_id("org"), name)

    with reported():
        if not NAME.match(name):
            raise CliError(
                "an org name is 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        org = with_stores(data_dir, database_url, work)
        out.print(f"created org {org.name} ({org.id})")


@app.command("ls")
def ls(data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """List the orgs."""

    async def work(stores: LocalStores, _settings: Settings) -> list[Org]:
        return await stores.keys.list_orgs()

    with reported():
        orgs = with_stores(data_dir, database_url, work)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("NAME", "ID", "CREATED"):
            table.add_column(column, no_wrap=True)
        for org in orgs:
            table.add_row(org.name, org.id, when(org.created_at))
        print_table(table)
