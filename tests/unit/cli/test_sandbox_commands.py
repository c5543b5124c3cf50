"""``corral sandbox ...`` against the stub server: requests sent, output, exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.cli.session import exit_status
from tests.support.sockets import refused_port
from tests.unit.cli.conftest import Stub

runner = CliRunner()


def corral(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_create_sends_every_option_and_prints_only_the_id(stub: Stub) -> None:
    code, out, err = corral(
        "sandbox",
        "create",
        "--template",
        "python",
        "--cpu",
        "2",
        "--memory",
        "1024",
        "--disk",
        "4096",
        "--timeout",
        "600",
        "--env",
        "A=1",
        "--env",
        "B=x=y",
        "--metadata",
        "owner=me",
    )
    assert code == 0, err
    sandbox_id = out.strip()
    assert sandbox_id in stub.state.sandboxes
    body = json.loads(stub.state.called("POST", "/api/sandboxes")[0])
    assert body == {
        "templateID": "python",
        "cpuCount": 2,
        "memoryMB": 1024,
        "diskMB": 4096,
        "timeout": 600,
        "envs": {"A": "1", "B": "x=y"},
        "metadata": {"owner": "me"},
    }


def test_create_with_defaults_sends_an_empty_body(stub: Stub) -> None:
    code, out, _ = corral("sandbox", "create")
    assert code == 0
    assert json.loads(stub.state.called("POST", "/api/sandboxes")[0]) == {}
    assert out.strip().startswith("sb-")


def test_a_malformed_env_is_refused_before_any_request(stub: Stub) -> None:
    code, _, err = corral("sandbox", "create", "--env", "NOVALUE")
    assert code == 1
    assert "error: --env expects KEY=VALUE" in err
    assert stub.state.calls == []


def test_ls_shows_a_table_and_quiet_ids(stub: Stub) -> None:
    code, out, _ = corral("sandbox", "ls")
    assert (code, out.strip()) == (0, "no sandboxes")
    ids = [corral("sandbox", "create", "--memory", "768")[1].strip() for _ in range(2)]
    code, out, _ = corral("sandbox", "ls")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["ID", "TEMPLATE", "STATUS"]
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ids
    assert all(r[1:4] == ["base", "running", "1"] and "768" in r for r in rows)
    code, out, _ = corral("sandbox", "ls", "-q")
    assert out.split() == ids


def test_rm_removes_and_reports_the_servers_error_without_a_traceback(stub: Stub) -> None:
    sandbox_id = corral("sandbox", "create")[1].strip()
    code, out, _ = corral("sandbox", "rm", sandbox_id)
    assert (code, out.strip()) == (0, f"removed {sandbox_id}")
    assert stub.state.sandboxes == {}
    code, out, err = corral("sandbox", "rm", sandbox_id)
    assert code == 1
    assert err.strip() == f"error: sandbox {sandbox_id} not found (HTTP 404)"
    assert "Traceback" not in out + err


def test_a_wrong_key_says_so_and_how_to_fix_it(stub: Stub) -> None:
    code, _, err = corral("sandbox", "ls", "--api-key", "ek_wrong0000_0000000000000000")
    assert code == 1
    assert "invalid API key (HTTP 401)" in err
    assert "CORRAL_API_KEY" in err


def test_an_unreachable_server_is_one_clear_line(stub: Stub) -> None:
    with refused_port() as port:
        code, _, err = corral("sandbox", "ls", "--url", f"http://127.0.0.1:{port}")
    assert code == 1
    assert err.startswith(f"error: cannot reach corral at http://127.0.0.1:{port}")
    assert len(err.strip().splitlines()) == 1


def test_exec_streams_stdout_and_stderr_and_exits_with_the_command_code(stub: Stub) -> None:
    sandbox_id = corral("sandbox", "create")[1].strip()
    code, out, err = corral("sandbox", "exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (code, out, err) == (3, "out\n", "err\n")


def test_exec_passes_env_cwd_and_timeout(stub: Stub) -> None:
    sandbox_id = corral("sandbox", "create")[1].strip()
    code, out, _ = corral(
        "sandbox",
        "exec",
        "--env",
        "GREETING=hi there",
        "--cwd",
        "/tmp",
        "--timeout",
        "9",
        sandbox_id,
        "--",
        "sh",
        "-c",
        'echo "$GREETING"; pwd',
    )
    assert (code, out) == (0, "hi there\n/tmp\n")
    spec = json.loads(stub.state.called("POST", "/exec")[0])
    assert spec == {
        "cmd": "sh",
        "args": ["-c", 'echo "$GREETING"; pwd'],
        "envs": {"GREETING": "hi there"},
        "cwd": "/tmp",
        "timeout": 9,
    }


def test_exec_fails_clearly_when_the_stream_ends_without_an_exit_code(stub: Stub) -> None:
    sandbox_id = corral("sandbox", "create")[1].strip()
    stub.state.drop_exec_socket = True
    code, _, err = corral("sandbox", "exec", sandbox_id, "--", "true")
    assert code == 1
    assert "closed before the command exited" in err


def test_exec_in_an_unknown_sandbox_reports_the_404(stub: Stub) -> None:
    code, _, err = corral("sandbox", "exec", "sb-nope000000000000", "--", "true")
    assert code == 1
    assert "sandbox sb-nope000000000000 not found (HTTP 404)" in err


@pytest.mark.parametrize(("code", "status"), [(0, 0), (3, 3), (255, 255), (-9, 137), (-15, 143), (1000, 1)])
def test_exit_status_maps_sandbox_exit_codes(code: int, status: int) -> None:
    assert exit_status(code) == status
