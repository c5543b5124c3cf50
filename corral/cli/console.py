"""Terminal output of the CLI and its one error path.

Contract: a command that fails for a reason the user can act on (an HTTP error, an
unreachable server, bad input, a CorralError from the local store) prints one line
``error: <message>`` on stderr and exits with status 1 (or the status the error
carries). Tracebacks are only for bugs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from corral.errors import CorralError

# No markup and no highlighting: names, metadata and messages from a server print as is.
out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


class CliError(Exception):
    """A failure to report to the user as ``error: <message>``, exiting ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@contextmanager
def reported() -> Iterator[None]:
    """Turn expected failures raised inside the block into ``error: ...`` + exit status."""
    try:
        yield
    except CliError as exc:
        fail(exc.message, exc.code)
    except CorralError as exc:
        fail(exc.message)
    except ValidationError as exc:
        fail(f"invalid settings: {setting_problems(exc)}")
    except SettingsError as exc:  # a list or object setting that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"CORRAL_{found[1].upper()}: " if found else ""
        fail(f'invalid settings: {name}must be JSON, e.g. ["a", "b"] for a list')
    except OSError as exc:
        fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))


def setting_problems(exc: ValidationError) -> str:
    """Pydantic's errors of ``Settings`` as one line naming each setting by its variable:
    ``CORRAL_PORT: Input should be less than or equal to 65535``."""
    problems = []
    for error in exc.errors():
        name = "_".join(str(p) for p in error["loc"][:1]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"CORRAL_{name}: {message}" if name else message)
    return "; ".join(problems)


def fail(message: str, code: int = 1) -> None:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    raise typer.Exit(code)


def print_table(table: Table) -> None:
    """Print a table; off a terminal (pipes, logs) at its natural width, never cut."""
    if out.is_terminal:
        out.print(table)
        return
    natural = out.measure(table, options=out.options.update_width(100_000)).maximum
    wide = Console(
        file=out.file, width=max(natural, out.width), highlight=False, markup=False, color_system=None
    )
    wide.print(table)


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    """``["K=V", ...]`` to a dict; CliError naming ``option`` for an item without ``=``."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{option} expects KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def when(value: datetime | str | None) -> str:
    """A timestamp for tables: ``YYYY-MM-DD HH:MM:SS`` in UTC, or ``-``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.strftime("%Y-%m-%d %H:%M:%S")
    return value.strftime("%Y-%m-%d %H:%M:%S")


def size(n: int | None) -> str:
    """Bytes in human units (``1.5 MB``); ``-`` for None."""
    if n is None:
        return "-"
    amount = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GB"
