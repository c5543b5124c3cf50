"""``corral audit [SANDBOX]``: the audit trail, through the server's HTTP API.

With a sandbox id, that sandbox's records (``GET /api/sandboxes/{id}/audit``); without,
the org's (``GET /api/audit``). It needs a key with ``audit:read`` (owner or admin;
by default the data dir's ``admin-key``). Newest first unless ``--oldest``; ``--limit``
records (default 50), or every record with ``--all`` (following ``nextCursor``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from corral.cli.client import DEFAULT_URL, ApiClient, KeyOption, UrlOption
from corral.cli.console import print_table, reported, when

PAGE = 500


def audit(
    sandbox: Annotated[
        str | None, typer.Argument(help="Sandbox id (sb-...); default: the whole org.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="How many records.", min=1)] = 50,
    every: Annotated[bool, typer.Option("--all", help="Every record (ignores --limit).")] = False,
    oldest: Annotated[bool, typer.Option("--oldest", help="Oldest first.")] = False,
    kind: Annotated[
        list[str] | None, typer.Option(help="Only records of this kind (repeatable).", show_default=False)
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Show the audit trail of a sandbox, or of the org."""
    with reported():
        path = f"/sandboxes/{sandbox}/audit" if sandbox and not kind else "/audit"
        wanted = None if every else limit
        records: list[dict[str, Any]] = []
        cursor: str | None = None
        with ApiClient(url, api_key) as api:
            while wanted is None or len(records) < wanted:
                params: dict[str, Any] = {"order": "oldest" if oldest else "newest"}
                params["limit"] = PAGE if wanted is None else min(PAGE, wanted - len(records))
                if cursor:
                    params["cursor"] = cursor
                if kind:
                    params["kind"] = kind
                    if sandbox:
                        params["sandboxID"] = sandbox
                page = api.get(path, params=params)
                records.extend(page["events"])
                cursor = page.get("nextCursor")
                if not cursor:
                    break
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("TIME", "KIND", "SANDBOX", "KEY", "CLIENT", "DETAILS"):
            table.add_column(column, no_wrap=column != "DETAILS")
        for r in records:
            details = json.dumps(r.get("data") or {}, separators=(",", ":"), sort_keys=True)
            table.add_row(
                when(r["at"]),
                r["kind"],
                r.get("sandboxID") or "-",
                r.get("keyID") or "-",
                r.get("clientID") or "-",
                details,
            )
        print_table(table)
