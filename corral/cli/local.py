"""Settings for commands that work on this node directly (serve, template, keys).

Flags override ``CORRAL_*`` environment variables, which override the defaults in
``corral.settings``: a flag left out is simply not passed to ``Settings``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from corral.settings import Settings

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (env CORRAL_DATA_DIR; default /var/lib/corral).",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (env CORRAL_DATABASE_URL; default SQLite in the data dir).",
        show_default=False,
    ),
]


def local_settings(**flags: Any) -> Settings:
    """Settings from the given flags (None = not given) over the environment.

    Raises pydantic's ValidationError for a bad value (reported by ``reported()``).
    """
    return Settings(**{name: value for name, value in flags.items() if value is not None})
