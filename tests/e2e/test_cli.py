"""The ``corral`` CLI as a user runs it, against a real corral server."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from corral.auth.service import KEY_FORMAT
from tests.e2e.conftest import Server
from tests.support.conditions import eventually
from tests.support.process import CORRAL

pytestmark = pytest.mark.e2e


def corral(server: Server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CORRAL, *args],
        env=server.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_until(master: int, needle: bytes, seen: bytearray, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                seen += os.read(master, 4096)
            except OSError:
                break
    assert needle in seen, f"{needle!r} not seen in {bytes(seen)[-2000:]!r}"


def test_create_exec_ls_shell_rm(server: Server) -> None:
    created = corral(server, "sandbox", "create", "--env", "GREETING=hello", "--metadata", "suite=e2e")
    assert created.returncode == 0, created.stderr
    sandbox_id = created.stdout.strip()
    assert sandbox_id.startswith("sb-") and "\n" not in sandbox_id

    try:
        ran = corral(
            server, "sandbox", "exec", sandbox_id, "--", "sh", "-c", 'echo "$GREETING"; echo err >&2; exit 7'
        )
        assert (ran.returncode, ran.stdout, ran.stderr) == (7, "hello\n", "err\n")

        ran = corral(server, "sandbox", "exec", "--cwd", "/tmp", sandbox_id, "--", "pwd")
        assert (ran.returncode, ran.stdout) == (0, "/tmp\n")

        listed = corral(server, "sandbox", "ls")
        assert listed.returncode == 0
        row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(sandbox_id))
        assert row[1:3] == ["base", "running"]
        assert sandbox_id in corral(server, "sandbox", "ls", "-q").stdout.split()

        master, slave = os.openpty()
        shell = open_shell(server, sandbox_id, slave)
        seen = bytearray()
        try:
            eventually(  # until the CLI made the tty raw
                lambda: not termios.tcgetattr(slave)[3] & termios.ECHO,
                30,
                "the CLI never put the terminal in raw mode",
            )
            os.write(master, b"echo $((6*7))\r")
            read_until(master, b"42\r\n", seen)
            os.write(master, b"exit\r")
            assert shell.wait(timeout=30) == 0
        finally:
            if shell.poll() is None:
                shell.kill()
                shell.wait()
            os.close(master)
            os.close(slave)
        assert b"$((6*7))" in seen  # the shell echoed what was typed
    finally:
        removed = corral(server, "sandbox", "rm", sandbox_id)
    assert (removed.returncode, removed.stdout.strip()) == (0, f"removed {sandbox_id}")
    assert sandbox_id not in corral(server, "sandbox", "ls", "-q").stdout.split()

    gone = corral(server, "sandbox", "exec", sandbox_id, "--", "true")
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: ")
    assert "Traceback" not in gone.stderr


def test_a_key_made_with_keys_create_works_against_the_server(server: Server) -> None:
    made = corral(
        server,
        "keys",
        "create",
        "--role",
        "viewer",
        "--name",
        "e2e",
        "--data-dir",
        str(server.data_dir),
        "--database-url",
        server.database_url,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert KEY_FORMAT.match(key)
    listed = corral(server, "sandbox", "ls", "--api-key", key)
    assert listed.returncode == 0, listed.stderr

    revoked = corral(
        server,
        "keys",
        "revoke",
        key.split("_")[1],
        "--data-dir",
        str(server.data_dir),
        "--database-url",
        server.database_url,
    )
    assert revoked.returncode == 0, revoked.stderr
    refused = corral(server, "sandbox", "ls", "--api-key", key)
    assert refused.returncode == 1
    assert "(HTTP 401)" in refused.stderr


def test_a_wrong_key_is_one_error_line(server: Server) -> None:
    result = corral(server, "sandbox", "ls", "--api-key", "ek_wrongkey01_" + "0" * 32)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "(HTTP 401)" in result.stderr


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def open_shell(server: Server, sandbox_id: str, tty: int) -> subprocess.Popen[bytes]:
    """``corral sandbox shell`` on the terminal ``tty`` (its own session, as a user's)."""
    return subprocess.Popen(
        [CORRAL, "sandbox", "shell", sandbox_id],
        env=server.env(),
        stdin=tty,
        stdout=tty,
        stderr=tty,
        start_new_session=True,
    )


def test_shell_follows_the_local_terminal_size(server: Server) -> None:
    created = corral(server, "sandbox", "create")
    assert created.returncode == 0, created.stderr
    sandbox_id = created.stdout.strip()
    master, slave = os.openpty()
    set_size(slave, 100, 30)
    shell = open_shell(server, sandbox_id, slave)
    seen = bytearray()
    try:
        os.write(master, b"stty size\r")
        read_until(master, b"30 100\r\n", seen)

        set_size(slave, 90, 20)
        shell.send_signal(signal.SIGWINCH)
        for _ in range(10):  # the resize is sent in the background
            os.write(master, b"stty size\r")
            try:
                read_until(master, b"20 90\r\n", seen, timeout=1)
                break
            except AssertionError:
                continue
        assert b"20 90\r\n" in seen, f"the PTY was not resized: {bytes(seen)[-1000:]!r}"
        os.write(master, b"exit\r")
        assert shell.wait(timeout=30) == 0
    finally:
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        os.close(master)
        os.close(slave)
        corral(server, "sandbox", "rm", sandbox_id)
