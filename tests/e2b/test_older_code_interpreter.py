"""The oldest ``e2b_code_interpreter`` of the tested range, 2.10.4 (README, "E2B"; the
first that reaches its server through ``E2B_SANDBOX_URL``: older ones call
``https://49999-<id>.<domain>``), on the oldest ``e2b`` it runs on (2.55.1: it asks for
2.55.0, whose ``get_sandbox_url`` takes no port), run by that SDK's own interpreter (a
venv kept beside the suite's data dir, made once per machine with pip, like a
template) through the flow the newest one runs in ``test_code_interpreter.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2b.conftest import DATA_DIR, Org, Server

OLDER = {"e2b-code-interpreter": "2.10.4", "e2b": "2.55.1"}
VENV = Path(os.environ.get("CORRAL_E2B_OLDER_CI_VENV", f"{DATA_DIR}-code-interpreter-sdk-2.10.4-e2b-2.55.1"))
pytestmark = pytest.mark.integration

FLOW = r"""
import base64
from e2b_code_interpreter import Sandbox

sandbox = Sandbox.create()
try:
    first = sandbox.run_code("x = 41\nprint('hello', x)")
    assert first.logs.stdout == ["hello 41\n"], first
    assert sandbox.run_code("x + 1").text == "42"
    failed = sandbox.run_code("1 / 0")
    assert failed.error is not None and failed.error.name == "ZeroDivisionError", failed
    chart = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()")
    [png] = [r.png for r in chart.results if r.png]
    assert base64.b64decode(png)[:8] == b"\x89PNG\r\n\x1a\n"
    context = sandbox.create_code_context(cwd="/tmp")
    assert sandbox.run_code("import os; os.getcwd()", context=context).text == "'/tmp'"
    assert context.id in [c.id for c in sandbox.list_code_contexts()]
    sandbox.remove_code_context(context)
    assert sandbox.run_code("cat(1 + 1)", language="r").logs.stdout == ["2"]
finally:
    sandbox.kill()
print("all checks passed")
"""


@pytest.fixture(scope="session")
def older_python() -> Path:
    python = VENV / "bin" / "python"
    pins = [f"{name}=={version}" for name, version in OLDER.items()]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=120)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins]
        subprocess.run(pip, check=True, timeout=600)
    script = "import importlib.metadata as m; print(*(f'{n}=={m.version(n)}' for n in ('e2b-code-interpreter', 'e2b')))"
    found = subprocess.run([str(python), "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.split() == pins
    return python


def test_the_older_sdk_runs_code(
    older_python: Path, e2b_server: Server, alpha: Org, interpreter_template: None
) -> None:
    env = {
        **os.environ,
        "E2B_API_URL": e2b_server.url,
        "E2B_SANDBOX_URL": e2b_server.url,
        "E2B_API_KEY": alpha.key,
    }
    ran = subprocess.run(
        [str(older_python), "-c", FLOW], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert ran.returncode == 0 and ran.stdout.strip().endswith("all checks passed"), ran.stdout + ran.stderr
