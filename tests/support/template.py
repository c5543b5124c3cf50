"""Templates (``base``, ``gui``, ...), built once per data dir by ``corral template
build`` (a no-op when it is built)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.process import CORRAL, tail

BUILD_TIMEOUT_S = 900


def build_base(env: Mapping[str, str], log: Path, data_dir: Path) -> None:
    """Builds ``base`` into ``data_dir``, its output in ``log``; fails the test session
    with the log's tail if the build fails."""
    build_template("base", env, log, data_dir)


def build_template(name: str, env: Mapping[str, str], log: Path, data_dir: Path) -> None:
    """Builds the template ``name`` into ``data_dir`` (see ``build_base``)."""
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(
            [CORRAL, "template", "build", name, "--data-dir", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            timeout=BUILD_TIMEOUT_S,
            check=False,
        )
    sys.stderr.write(f"\n{name} template ready in {time.monotonic() - started:.1f}s\n")
    if proc.returncode != 0:
        pytest.fail(f"corral template build {name} failed ({proc.returncode}):\n{tail(log)}", pytrace=False)
