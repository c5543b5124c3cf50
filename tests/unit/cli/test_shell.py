"""``corral sandbox shell`` in a real pseudo-terminal, against the stub's fake shell."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import pytest

from corral.cli.terminal import terminal_size
from tests.support.conditions import eventually
from tests.unit.cli.conftest import Stub


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def read_until(master: int, needle: bytes, seen: bytearray, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} not seen; got {bytes(seen)!r}"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
    assert needle in seen, f"{needle!r} not seen; got {bytes(seen)!r}"


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    eventually(condition, timeout, "condition not met in time")


def shell_argv(stub: Stub, sandbox_id: str) -> list[str]:
    """``corral sandbox shell`` against the stub server."""
    cli = [sys.executable, "-m", "corral.cli.main", "sandbox", "shell", sandbox_id]
    return [*cli, "--url", stub.url, "--api-key", stub.key]


def test_shell_is_raw_forwards_keys_resizes_and_restores_the_tty(stub: Stub) -> None:
    sandbox_id = "sb-stub000000000000"
    stub.state.sandboxes[sandbox_id] = {"sandboxID": sandbox_id}
    master, slave = os.openpty()
    set_size(slave, 100, 30)
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        shell_argv(stub, sandbox_id),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    seen = bytearray()
    try:
        read_until(master, b"$ ", seen)
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & (termios.ECHO | termios.ICANON), "the local tty is not in raw mode"
        assert json.loads(stub.state.called("POST", "/pty")[0]) == {"cols": 100, "rows": 30}

        os.write(master, b"echo hello\r")
        read_until(master, b"\r\nhello\r\n", seen)

        set_size(slave, 120, 40)
        proc.send_signal(signal.SIGWINCH)
        wait_for(
            lambda: any(
                json.loads(b) == {"cols": 120, "rows": 40} for b in stub.state.called("POST", "/resize")
            )
        )

        os.write(master, b"exit\r")
        assert proc.wait(timeout=10) == 0
        assert termios.tcgetattr(slave) == before, "the local tty mode was not restored"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)
    assert any(m == "DELETE" and "/pty/ps-" in p for m, p, _ in stub.state.calls)


def test_shell_with_stdin_from_a_pipe_runs_the_piped_commands(stub: Stub) -> None:
    sandbox_id = "sb-stub000000000001"
    stub.state.sandboxes[sandbox_id] = {"sandboxID": sandbox_id}
    result = subprocess.run(
        shell_argv(stub, sandbox_id),
        check=False,
        input=b"echo piped\nexit\n",
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert b"\r\npiped\r\n" in result.stdout


def test_shell_on_an_unknown_sandbox_is_an_error(stub: Stub) -> None:
    result = subprocess.run(
        shell_argv(stub, "sb-missing0000000000"),
        check=False,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=20,
    )
    assert result.returncode == 1
    assert result.stderr.decode().strip() == "error: sandbox sb-missing0000000000 not found (HTTP 404)"


def test_terminal_size_falls_back_when_the_tty_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "91")
    monkeypatch.setenv("LINES", "33")
    master, slave = os.openpty()
    try:
        assert terminal_size(slave) == (91, 33)  # a fresh pseudo-terminal is 0x0
        set_size(slave, 100, 30)
        assert terminal_size(slave) == (100, 30)
        assert terminal_size(-1) == (91, 33)
    finally:
        os.close(master)
        os.close(slave)
