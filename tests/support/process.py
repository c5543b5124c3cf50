"""``corral serve`` as a subprocess, on a socket this process bound (``--fd``): the
port is the server's from the start, so none is released and taken again."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.conditions import eventually
from tests.support.sockets import listening, port_of

CORRAL = str(Path(sys.executable).parent / "corral")
START_TIMEOUT_S = 90.0


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log, for a failure message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(args: list[str], env: Mapping[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``corral serve --fd N *args`` with stdout and stderr to ``log``; returns the process
    and its URL at once. The socket lives in the child only (closed here), so the port
    refuses connections once the server is gone."""
    with listening() as sock, log.open("wb") as out:
        fd = sock.fileno()
        proc = subprocess.Popen(
            [CORRAL, "serve", "--fd", str(fd), *args],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
        )
        return proc, f"http://127.0.0.1:{port_of(sock)}"


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = START_TIMEOUT_S
) -> None:
    """Returns once ``GET /healthz`` answers 200; fails the test (with the log's tail) if
    the server exits or is not healthy within ``timeout`` seconds."""

    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"corral serve exited with {proc.returncode}:\n{tail(log)}", pytrace=False)
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    eventually(healthy, timeout, lambda: f"corral serve was not healthy in {timeout}s:\n{tail(log)}", 0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; returns once it is gone."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class ServerLife:
    """One life of a server a test kills and starts again on the same data dir."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    key: str

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}/api", headers={"X-API-Key": self.key}, timeout=60)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Returns once ``text`` is in the log; fails if the server exits first."""

        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited before {text!r}:\n{tail(self.log)}")
            return text in self.log.read_text(errors="replace")

        eventually(seen, timeout, lambda: f"never saw {text!r}:\n{tail(self.log)}")

    def crash(self) -> None:
        """SIGKILL, as a crash: nothing of the server's shutdown runs."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        stop(self.proc)
