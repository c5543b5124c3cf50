"""``corral serve --fd N``: the server takes a listening socket it inherits (a test or a
supervisor bound it), so no port is released and bound again."""

from __future__ import annotations

import os
import socket
import sys
import types
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from corral.cli.main import app
from corral.settings import Settings
from tests.support import process
from tests.support.app import KEY
from tests.support.sockets import listening, port_of

runner = CliRunner()


def test_the_socket_is_served_and_names_the_port(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[Settings, socket.socket]] = []
    module = types.ModuleType("corral.api.server")
    module.serve = lambda settings, sock: calls.append((settings, sock))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "corral.api.server", module)
    monkeypatch.setenv("CORRAL_PORT", "9000")
    with listening() as sock:
        result = runner.invoke(app, ["serve", "--fd", str(sock.fileno()), "--data-dir", str(tmp_path)])
        assert result.exit_code == 0, result.output
        [(settings, served)] = calls
        assert served.fileno() == sock.fileno()
        assert (settings.host, settings.port) == ("127.0.0.1", port_of(sock))  # the socket's, not the env's
        served.detach()  # the test's socket, closed once


def test_a_descriptor_that_is_no_socket_is_one_line(tmp_path: Path) -> None:
    with (tmp_path / "file").open("w") as file:
        fd = file.fileno()
        result = runner.invoke(app, ["serve", "--fd", str(fd), "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: --fd {fd} is not an open socket")


def test_the_real_server_answers_on_the_inherited_socket(tmp_path: Path) -> None:
    env = {**os.environ, "CORRAL_RUNTIME": "process", "CORRAL_API_KEY": KEY}
    log = tmp_path / "server.log"
    proc, url = process.start(["--data-dir", str(tmp_path / "data")], env, log)
    try:
        process.wait_healthy(url, proc, log, timeout=60)
        listed = httpx.get(f"{url}/api/sandboxes", headers={"X-API-Key": KEY}, timeout=10)
        assert (listed.status_code, listed.json()) == (200, [])
    finally:
        process.stop(proc)
    with pytest.raises(httpx.ConnectError):  # the port went with the server
        httpx.get(f"{url}/healthz", timeout=5)
