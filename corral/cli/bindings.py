"""``corral bindings ...``: an org's service bindings, managed directly in this node's
store (an org's owner or admin can also manage them over HTTP: ``/api/bindings``).

A binding is an upstream base URL and the header and secret corral adds to the
requests the org's sandboxes send it through the forwarder (docs/security.md,
"Service bindings"). The secret is read from a hidden prompt (or standard input, or
``CORRAL_BINDING_SECRET``) rather than the command line, where other users of the
host could see it; nothing prints it back.

Contracts: ``add`` fails naming the field for a bad name, URL, header or secret, and
when the org has a binding of that name; ``rm`` fails for a name the org lacks; the
org must exist (``default`` by default).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from corral.cli.console import CliError, out, print_table, reported, when
from corral.cli.local import DatabaseOption, DataDirOption
from corral.cli.store import with_stores
from corral.domain.bindings import Binding, binding, check_name
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores

app = typer.Typer(help="Manage service bindings in this node's store.", no_args_is_help=True)

OrgOption = Annotated[str, typer.Option("--org", help="Org name.")]
NameArgument = Annotated[str, typer.Argument(help="Binding name: lowercase letters, digits, '_'.")]


@app.command("add")
def add(
    name: NameArgument,
    url: Annotated[str, typer.Option("--url", help="The upstream's base URL (http or https).")],
    header: Annotated[str, typer.Option("--header", help="The header corral adds, e.g. Authorization.")],
    secret: Annotated[
        str,
        typer.Option(
            "--secret",
            prompt=True,
            hide_input=True,
            envvar="CORRAL_BINDING_SECRET",
            help="The header's value; prompted for (hidden) when left out.",
        ),
    ],
    org: OrgOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Add a service binding to an org."""

    async def work(stores: LocalStores, _settings: Settings) -> Binding:
        owner = await stores.keys.org_by_name(org)
        added = binding(owner.id, name, url, header, secret, datetime.now(UTC))
        await stores.bindings.add(added)
        return added

    with reported():
        added = with_stores(data_dir, database_url, work)
        out.print(f"added binding {added.name} -> {added.url} (header {added.header}) to org {org}")


@app.command("ls")
def ls(
    org: OrgOption = "default", data_dir: DataDirOption = None, database_url: DatabaseOption = None
) -> None:
    """List an org's service bindings (never their secrets)."""

    async def work(stores: LocalStores, _settings: Settings) -> list[Binding]:
        return await stores.bindings.list((await stores.keys.org_by_name(org)).id)

    with reported():
        found = with_stores(data_dir, database_url, work)
        if not found:
            out.print(f"no bindings in org {org}")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("NAME", "URL", "HEADER", "CREATED"):
            table.add_column(column, no_wrap=True)
        for each in found:
            table.add_row(each.name, each.url, each.header, when(each.created_at))
        print_table(table)


@app.command("rm")
def rm(
    name: NameArgument,
    org: OrgOption = "default",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Remove a service binding (sandboxes that opened it keep it until they end)."""

    async def work(stores: LocalStores, _settings: Settings) -> bool:
        return await stores.bindings.remove((await stores.keys.org_by_name(org)).id, check_name(name))

    with reported():
        if not with_stores(data_dir, database_url, work):
            raise CliError(f"org {org} has no binding named {name}")
        out.print(f"removed binding {name} from org {org}")
