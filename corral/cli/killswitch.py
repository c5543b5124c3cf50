"""``corral killswitch on|off|status [--org NAME]``: the kill switch, in the store.

While a switch is engaged, creating sandboxes answers 503 and so does the gateway,
everywhere (no ``--org``) or for one org. The switch is written to the store, so it
reaches every server sharing it (each re-reads the store every
``kill_switch_refresh_s``, 2 s by default) and outlives restarts. It needs access to
the data dir or database (an operator's tool), not an API key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from corral.cli.console import out, print_table, reported, when
from corral.cli.local import DatabaseOption, DataDirOption
from corral.cli.store import with_stores
from corral.domain import Org, Switch
from corral.domain.killswitch import GLOBAL
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores

app = typer.Typer(help="Switch sandbox creation and the gateway off (and on), globally or per org.")

OrgName = Annotated[
    str | None, typer.Option("--org", help="Only this org (default: every org).", show_default=False)
]


def _scope_label(scope: str, orgs: dict[str, Org]) -> str:
    if scope == GLOBAL:
        return "every org"
    org = orgs.get(scope)
    return f"org {org.name}" if org else f"org {scope}"


def _flip(engage: bool, org: str | None, reason: str, data_dir: Path | None, database_url: str | None) -> str:
    async def work(stores: LocalStores, _settings: Settings) -> str:
        scope = GLOBAL if org is None else (await stores.keys.org_by_name(org)).id
        switches = stores.switches
        if engage:
            await switches.engage(scope, reason)
        else:
            await switches.release(scope)
        return "every org" if org is None else f"org {org}"

    return with_stores(data_dir, database_url, work)


@app.command("on")
def on(
    org: OrgName = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the switch).")] = "",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Engage the kill switch: creates and the gateway answer 503."""
    with reported():
        label = _flip(True, org, reason, data_dir, database_url)
        out.print(f"kill switch on for {label}")


@app.command("off")
def off(org: OrgName = None, data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """Release the kill switch (a global switch and an org's are released separately)."""
    with reported():
        label = _flip(False, org, "", data_dir, database_url)
        out.print(f"kill switch off for {label}")


@app.command("status")
def status(data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """List the engaged switches."""

    async def work(stores: LocalStores, _settings: Settings) -> tuple[list[Switch], dict[str, Org]]:
        orgs = {o.id: o for o in await stores.keys.list_orgs()}
        return await stores.switches.engaged(), orgs

    with reported():
        switches, orgs = with_stores(data_dir, database_url, work)
        if not switches:
            out.print("no kill switch is on")
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("SCOPE", "SINCE", "REASON"):
            table.add_column(column, no_wrap=True)
        for switch in switches:
            table.add_row(_scope_label(switch.scope, orgs), when(switch.engaged_at), switch.reason or "-")
        print_table(table)
