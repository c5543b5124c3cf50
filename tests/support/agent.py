"""The real agent (``corral/agent/sandbox_agent.py``) as a local process on a unix
socket in a fresh directory, for the tests that drive it directly."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.agent.client import AgentClient
from corral.agent.wire import AGENT_FILE, agent_argv
from tests.support.conditions import eventually


@dataclass
class RunningAgent:
    proc: subprocess.Popen[bytes]
    socket: Path
    log: Path
    workdir: Path

    def client(self, output_limit: int = 16 << 20) -> AgentClient:
        return AgentClient(self.socket, op_timeout=10.0, output_limit=output_limit)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def running_agent(socket_dir: Path | None = None) -> Iterator[RunningAgent]:
    """The agent on a socket in a fresh directory; stopped afterwards, and its log
    checked for internal errors."""
    workdir = Path(tempfile.mkdtemp(prefix="corral-agent-", dir="/tmp"))
    sock = (socket_dir or workdir) / "agent.sock"
    log = workdir / "agent.log"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FROM_AGENT": "agent", "BOTH": "agent"}
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            agent_argv(sys.executable, str(AGENT_FILE), "--socket", str(sock)),
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    agent = RunningAgent(proc, sock, log, workdir)
    try:
        eventually(lambda: sock.exists() or proc.poll() is not None, 10, lambda: agent.log_text())
        if proc.poll() is not None:
            raise RuntimeError(f"agent did not start: {agent.log_text()}")
        yield agent
        assert "internal error" not in agent.log_text(), agent.log_text()
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def started(proc: subprocess.Popen[Any], sock: Path) -> bool:
    """Whether the agent ``proc`` has bound ``sock`` (AssertionError once it exited)."""
    assert proc.poll() is None, f"the agent exited with {proc.returncode}"
    return sock.exists()
