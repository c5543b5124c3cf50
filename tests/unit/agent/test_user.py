"""The agent's ``--user`` (a Dockerfile template's USER): it stays root and runs
commands, sessions and PTYs as that user; ``exec``'s ``user`` overrides it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.agent.wire import AGENT_FILE, agent_argv
from corral.domain import ExecRequest
from tests.support.agent import started
from tests.support.conditions import eventually

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)


def start(user: str) -> Iterator[AgentClient]:
    workdir = Path(tempfile.mkdtemp(prefix="corral-agent-user-", dir="/tmp"))
    sock = workdir / "agent.sock"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/root"}
    proc = subprocess.Popen(
        [*agent_argv(sys.executable, str(AGENT_FILE), "--socket", str(sock)), "--user", user],
        cwd="/",
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        eventually(lambda: started(proc, sock), 10, "the agent did not start")
        yield AgentClient(sock, op_timeout=10.0)
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def as_nobody() -> Iterator[AgentClient]:
    yield from start("nobody")


async def test_commands_run_as_the_user_with_its_home_and_root_on_request(as_nobody: AgentClient) -> None:
    home = pwd.getpwnam("nobody").pw_dir
    result = await as_nobody.exec(ExecRequest("sh", ("-c", 'id -un; echo "$HOME"; id -u')))
    assert result.stdout.decode().split() == ["nobody", home, str(pwd.getpwnam("nobody").pw_uid)]
    root = await as_nobody.exec(ExecRequest("id", ("-un",), user="root"))
    assert root.stdout == b"root\n"
    other = await as_nobody.exec(ExecRequest("id", ("-un",), user="daemon"))
    assert other.stdout == b"daemon\n"


async def test_an_unknown_user_fails_like_a_shell_would() -> None:
    for client in start("no-such-user-here"):
        result = await client.exec(ExecRequest("true"))
        assert result.exit_code == 126 and b"user 'no-such-user-here' does not exist" in result.stderr
