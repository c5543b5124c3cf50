"""The real OpenComputer TypeScript SDK (``@opencomputer/sdk`` 0.12.4, in ts/) against a
real corral server: ``ts/flow.mjs`` runs the flow and prints what it saw as JSON."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e

TS_DIR = Path(__file__).parent / "ts"


@pytest.fixture(scope="module")
def flow(server: Server) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is not installed (make install installs it)"
    assert (TS_DIR / "node_modules" / "@opencomputer" / "sdk").is_dir(), (
        "run make install (npm ci in tests/e2e/ts)"
    )
    proc = subprocess.run(
        [node, "--experimental-websocket", str(TS_DIR / "flow.mjs")],
        cwd=TS_DIR,
        env=server.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"flow.mjs printed nothing (exit {proc.returncode}); stderr:\n{proc.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in report, (
        f"flow.mjs failed: {report.get('error')}\nsteps so far: {json.dumps(report.get('results'))}\n"
        f"stderr:\n{proc.stderr[-3000:]}"
    )
    return report


def test_create_gives_a_sandbox_id(flow: dict[str, Any]) -> None:
    assert flow["create"]["sandboxId"].startswith("sb-")


def test_exec_run_through_run_async_and_polling(flow: dict[str, Any]) -> None:
    assert flow["run"] == {"exitCode": 3, "stdout": "hello\n", "stderr": "oops\n"}
    assert flow["runEnvCwd"]["exitCode"] == 0
    assert flow["runEnvCwd"]["stdout"] == "hi there\n/tmp\n"


def test_exec_start_streams_and_takes_stdin(flow: dict[str, Any]) -> None:
    assert flow["start"]["streamed"] == "ping\npong\n"
    assert flow["start"]["exitCode"] != 0


def test_attach_replays_scrollback_before_the_marker(flow: dict[str, Any]) -> None:
    assert flow["attach"] == {"beforeMarker": "early\n", "afterMarker": "late now\n", "exitCode": 0}


def test_files_round_trip_10_mb(flow: dict[str, Any]) -> None:
    files = flow["files"]
    assert files["receivedBytes"] == 10 * 1024 * 1024
    assert files["received"] == files["sent"]
    assert files["inside"] == files["sent"]


def test_pty_answers(flow: dict[str, Any]) -> None:
    assert flow["pty"] == {"sawAnswer": True, "sawSize": True}


def test_kill_removes_the_sandbox(flow: dict[str, Any]) -> None:
    assert flow["kill"] == {"stillListed": False}
