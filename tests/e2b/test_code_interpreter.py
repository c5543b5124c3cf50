"""The real ``e2b_code_interpreter`` SDK (the pinned newest) against corral on runc: its
``Sandbox.create()`` (the SDK's default template, ``code-interpreter-v1``, is corral's
``code-interpreter``) and ``run_code`` through the E2B surface's sandbox traffic to the
interpreter's server on port 49999 (corral/agent/interpreter.py): state across cells,
output, errors, charts, contexts, R, a timeout, restarts."""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Iterator

import httpx
import pytest
from e2b import NotFoundException, SandboxException, TimeoutException
from e2b_code_interpreter import Execution, Sandbox

from tests.e2b.conftest import Server
from tests.support.conditions import eventually

pytestmark = pytest.mark.integration

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython colours its tracebacks


@pytest.fixture(scope="module")
def sandbox(e2b_env: Server, interpreter_template: None) -> Iterator[Sandbox]:
    sandbox = Sandbox.create(envs={"FROM_CREATE": "yes"})
    yield sandbox
    sandbox.kill()


def test_the_sdks_default_template_is_the_code_interpreter(sandbox: Sandbox) -> None:
    assert sandbox.get_info().template_id == "code-interpreter"
    assert sandbox.commands.run("whoami; pwd").stdout.split() == ["sandbox", "/home/sandbox"]


def test_state_is_kept_across_cells_and_output_streams(sandbox: Sandbox) -> None:
    seen: list[str] = []
    first = sandbox.run_code("x = 41\nprint('hello', x)", on_stdout=lambda message: seen.append(message.line))
    assert first.error is None and first.logs.stdout == ["hello 41\n"] and seen == ["hello 41\n"]
    second = sandbox.run_code("x + 1")
    assert second.text == "42" and second.results[0].is_main_result
    assert first.execution_count is not None and second.execution_count == first.execution_count + 1
    assert sandbox.run_code("import sys; print('oops', file=sys.stderr)").logs.stderr == ["oops\n"]
    frame = sandbox.run_code("import pandas as pd; pd.DataFrame({'a': [1, 2]})").results[0]
    assert frame.html is not None and "<table" in frame.html and frame.text is not None

    assert sandbox.run_code("import os; os.environ['FROM_CREATE']").text == "'yes'"  # the sandbox's
    envs = sandbox.run_code("os.environ['GREETING']", envs={"GREETING": "hi"})
    assert envs.text == "'hi'"  # for that execution only:
    assert sandbox.run_code("os.environ.get('GREETING')").text is None


def test_an_exception_with_its_traceback(sandbox: Sandbox) -> None:
    execution = sandbox.run_code("def f():\n    return 1 / 0\nf()")
    assert execution.error is not None
    assert (execution.error.name, execution.error.value) == ("ZeroDivisionError", "division by zero")
    traceback = ANSI.sub("", execution.error.traceback)
    assert "----> 3 f()" in traceback and "----> 2     return 1 / 0" in traceback
    assert execution.results == []


def test_a_matplotlib_chart_comes_back_as_a_png(sandbox: Sandbox) -> None:
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.figure(figsize=(4, 3), dpi=100)\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.show()"
    )
    execution = sandbox.run_code(code)
    [chart] = [result for result in execution.results if result.png]
    assert not chart.is_main_result  # a display, not the cell's value
    png = base64.b64decode(chart.png or "")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR" and png[-8:-4] == b"IEND"
    width, height = struct.unpack(">II", png[16:24])
    assert 300 <= width <= 400 and 220 <= height <= 300  # 400x300, trimmed to the drawing


def test_contexts_their_restart_and_removal(sandbox: Sandbox) -> None:
    context = sandbox.create_code_context(cwd="/tmp")
    assert (context.language, context.cwd) == ("python", "/tmp")
    sandbox.run_code("y = 'mine'", context=context)
    assert sandbox.run_code("import os; os.getcwd(), y", context=context).text == "('/tmp', 'mine')"
    assert sandbox.run_code("'y' in globals()").text == "False"  # the default context: another kernel
    assert context.id in [c.id for c in sandbox.list_code_contexts()]

    sandbox.restart_code_context(context)
    after = sandbox.run_code("y", context=context)
    assert after.error is not None and after.error.name == "NameError"

    died = sandbox.run_code("import os; os.kill(os.getpid(), 9)", context=context)
    assert died.error is not None and died.error.name == "KernelDied"
    assert sandbox.run_code("6 * 7", context=context).text == "42"  # started again

    sandbox.remove_code_context(context)
    assert context.id not in [c.id for c in sandbox.list_code_contexts()]
    with pytest.raises(NotFoundException, match="not found"):
        sandbox.run_code("1", context=context)


def test_r_is_the_second_language(sandbox: Sandbox) -> None:
    first = sandbox.run_code("v <- c(1, 2, 3)\ncat(sum(v), '\\n')", language="r")
    assert first.error is None and first.logs.stdout == ["6 \n"]
    assert sandbox.run_code("cat(length(v))", language="r").logs.stdout == ["3"]  # its state kept
    failed = sandbox.run_code("stop('no way')", language="r")
    assert failed.error is not None and "no way" in failed.error.value
    with pytest.raises(SandboxException, match="language: 'cobol' is not one of python, r"):
        sandbox.run_code("1", language="cobol")


def test_a_run_past_its_timeout_is_interrupted(sandbox: Sandbox) -> None:
    sandbox.run_code("import time\nkept = 'yes'")
    started = time.monotonic()
    with pytest.raises(TimeoutException):
        sandbox.run_code("time.sleep(60)", timeout=2)
    after = sandbox.run_code("kept", timeout=10)  # interrupted: the kernel is free, its state kept
    assert after.text == "'yes'"
    assert time.monotonic() - started < 15


def test_the_server_is_started_again_when_it_dies(sandbox: Sandbox) -> None:
    killed = sandbox.commands.run("pkill -e -f '^python3 [/]usr/local/lib/corral/interpreter.py'")
    assert "killed" in killed.stdout
    answers: list[Execution] = []

    def answered() -> bool:
        try:
            answers.append(sandbox.run_code("1 + 1", timeout=10))
        except (SandboxException, TimeoutException, httpx.TransportError):  # gone, or not yet back
            return False
        return True

    def said() -> str:  # what its supervisor's processes and its log say
        ran = sandbox.commands.run("ps -eo pid,rss,etime,args; tail -c 3000 /tmp/.corral-interpreter.log")
        return f"the code interpreter never answered again:\n{ran.stdout}"

    eventually(answered, 30, said)
    assert answers[-1].text == "2"
