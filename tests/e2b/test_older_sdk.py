"""The oldest ``e2b`` SDK of the tested range, 2.20.0 (README, "E2B"), through the same
flow as the newest: ``older_sdk.py`` run by that SDK's own interpreter, a venv kept
beside the suite's data dir (made once per machine with pip, like a template). 2.20
speaks Connect through its own ``e2b_connect`` client on httpx (the newest, connectrpc
on pyqwest), sends the sandbox's headers on ``connect`` and none on the sandbox that
``connect`` returns, and has no ``close_stdin``: what breaks look-alike servers between
SDK releases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2b.conftest import DATA_DIR, Org, Server

OLDER = "2.20.0"
VENV = Path(os.environ.get("CORRAL_E2B_OLDER_VENV", f"{DATA_DIR}-sdk-{OLDER}"))
SCRIPT = Path(__file__).with_name("older_sdk.py")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def older_python() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"e2b=={OLDER}"],
            check=True,
            timeout=600,
        )
    found = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('e2b'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == OLDER
    return python


def test_the_older_sdk_runs_the_whole_flow(older_python: Path, e2b_server: Server, alpha: Org) -> None:
    env = {
        **os.environ,
        "E2B_API_URL": e2b_server.url,
        "E2B_SANDBOX_URL": e2b_server.url,
        "E2B_API_KEY": alpha.key,
    }
    ran = subprocess.run(
        [str(older_python), str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert ran.returncode == 0 and ran.stdout.strip().endswith("all checks passed"), ran.stdout + ran.stderr
