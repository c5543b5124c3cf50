"""``corral template ...``: build and list template roots on this node.

These commands use the data dir directly (no server needed); building needs root.
On a terminal a progress bar follows the builder's ProgressFn; elsewhere (CI logs)
each new progress message is printed on its own line.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from corral.cli import store as local_store
from corral.cli.console import CliError, out, print_table, reported, size, when
from corral.cli.local import DataDirOption, local_settings
from corral.domain import Template
from corral.ports import ProgressFn, Templates
from corral.settings import Settings

app = typer.Typer(help="Build and list templates (root filesystems) on this node.", no_args_is_help=True)


def open_templates(settings: Settings) -> Templates:
    """The node's template store (tests replace it)."""
    try:
        return local_store.open_templates(settings)
    except ImportError as exc:
        raise CliError(f"the template builder is not available: {exc}") from exc


@app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="Template name, e.g. base.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", "-f", help="Rebuild even if it is built.")] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Build a template (a no-op when it is already built, unless --force)."""
    with reported():
        store = open_templates(local_settings(data_dir=data_dir))
        known = store.known()
        if name not in known:
            raise CliError(f"unknown template {name!r}; known templates: {', '.join(known) or 'none'}")
        started = time.monotonic()
        template = asyncio.run(_build(store, name, force))
        took = time.monotonic() - started
        out.print(
            f"template {template.name}: {template.digest[:12]} ({size(template.size_bytes)}) ready in {took:.1f}s"
        )


async def _build(store: Templates, name: str, force: bool) -> Template:
    if not out.is_terminal:
        return await store.build(name, _line_progress(), force=force)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task(f"{name}: starting", total=1.0)

        def progress(message: str, fraction: float) -> None:
            bar.update(task, description=message, completed=min(max(fraction, 0.0), 1.0))

        template = await store.build(name, progress, force=force)
        bar.update(task, completed=1.0)
        return template


def _line_progress() -> ProgressFn:
    last: list[str] = [""]

    def progress(message: str, fraction: float) -> None:
        if message != last[0]:
            last[0] = message
            out.print(f"[{min(max(fraction, 0.0), 1.0):4.0%}] {message}")

    return progress


@app.command("ls")
def ls(data_dir: DataDirOption = None) -> None:
    """List the templates this node can build, and the ones it has built."""
    with reported():
        store = open_templates(local_settings(data_dir=data_dir))
        built = {t.name: t for t in asyncio.run(store.list())}
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("NAME", "STATUS", "DIGEST", "SIZE", "BUILT"):
            table.add_column(column, no_wrap=True)
        for name in sorted(set(store.known()) | set(built)):
            template = built.get(name)
            if template is None:
                table.add_row(name, "not built", "-", "-", "-")
            else:
                table.add_row(
                    name, "built", template.digest[:12], size(template.size_bytes), when(template.created_at)
                )
        print_table(table)
