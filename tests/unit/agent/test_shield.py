"""The agent keeps the code it runs out of itself (``sandbox_agent.shield``), and a PTY
that cannot be opened is a clear ``no_pty`` (Conflict), on the host: the real agent as
a local process, attacked by a root process with the capabilities of a sandbox's
processes (no CAP_SYS_PTRACE, no CAP_SYS_RESOURCE). tests/security/ makes the same
attacks in runc."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.agent.client import AgentClient
from corral.agent.wire import AGENT_FILE, agent_argv
from corral.domain import ExecRequest, PtySize, SessionSpec
from corral.errors import Conflict
from corral.runtime.bundle import CAPABILITIES
from tests.support.agent import started
from tests.support.conditions import eventually
from tests.support.procfs import status_field

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

# Root with exactly the capabilities of a sandbox's processes (CAP_SYS_ADMIN and
# CAP_PERFMON, for one, would let it read the agent's /proc files).
AS_SANDBOX = (
    "setpriv",
    "--bounding-set",
    ",".join(["-all", *("+" + cap.removeprefix("CAP_").lower() for cap in CAPABILITIES)]),
    "--inh-caps",
    "-all",
)

ATTACKS = textwrap.dedent(
    """
    import ctypes, errno, os, sys
    pid = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]

    def code(ret):
        return "ok" if ret >= 0 else errno.errorcode[ctypes.get_errno()]

    pidfd = libc.syscall(434, pid, 0)
    print("pidfd_getfd", code(libc.syscall(438, pidfd, 3, 0)))
    print("ptrace_seize", code(libc.ptrace(0x4206, pid, None, None)))
    rlim = (ctypes.c_uint64 * 2)()
    print("prlimit", code(libc.prlimit(pid, 7, None, ctypes.byref(rlim))))
    for name in ("environ", "mem", "fdinfo/3"):
        try:
            open(f"/proc/{pid}/{name}", "rb").close()
            print(name, "ok")
        except OSError as exc:
            print(name, errno.errorcode[exc.errno])
    """
)

DUMPABLE = "import ctypes; print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"  # PR_GET_DUMPABLE


@contextlib.contextmanager
def agent_process(*wrapper: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The agent on a socket in a fresh directory, started through ``wrapper``."""
    workdir = Path(tempfile.mkdtemp(prefix="corral-shield-", dir="/tmp"))
    sock = workdir / "agent.sock"
    proc = subprocess.Popen(
        [*wrapper, *agent_argv(sys.executable, str(AGENT_FILE), "--socket", str(sock))],
        cwd=workdir,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SECRET": "of the agent"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        eventually(lambda: started(proc, sock), 10, "the agent did not start")
        yield proc, sock
    finally:
        proc.kill()
        proc.wait()
        assert proc.stderr is not None
        errors = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)
        assert "cannot" not in errors, errors  # shield() logs what it could not do


@needs_root
def test_the_sandboxs_root_cannot_reach_into_the_agent() -> None:
    with agent_process(*AS_SANDBOX) as (agent, _sock):
        assert status_field(agent.pid, "Gid") == ["0", "0", "65534", "0"]  # saved gid: nogroup
        attack = subprocess.run(
            [*AS_SANDBOX, sys.executable, "-c", ATTACKS, str(agent.pid)],
            capture_output=True,
            text=True,
            check=True,
        )
        results = dict(line.split() for line in attack.stdout.splitlines())
        assert results == {
            "pidfd_getfd": "EPERM",
            "ptrace_seize": "EPERM",
            "prlimit": "EPERM",
            "environ": "EACCES",
            "mem": "EACCES",
            "fdinfo/3": "EACCES",
        }


@needs_root
def test_without_the_shield_the_same_attacks_work() -> None:
    """The attack itself is sound: a plain root process (dumpable, ids matched) is open
    to it, so the test above fails if the shield does."""
    victim = subprocess.Popen(
        [
            *AS_SANDBOX,
            sys.executable,
            "-c",
            "import os, socket, time; s = socket.socket(); os.dup2(s.fileno(), 3); time.sleep(30)",
        ]
    )
    try:
        eventually(lambda: holds_a_socket(victim.pid), 10, "the victim never held its socket")
        attack = subprocess.run(
            [*AS_SANDBOX, sys.executable, "-c", ATTACKS, str(victim.pid)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert set(dict(line.split() for line in attack.stdout.splitlines()).values()) == {"ok"}
    finally:
        victim.kill()
        victim.wait()


async def test_commands_of_the_agent_are_dumpable_with_their_own_ids() -> None:
    with agent_process() as (agent, sock):
        client = AgentClient(sock, op_timeout=10.0)
        result = await client.exec(ExecRequest(sys.executable, ("-c", DUMPABLE)))
        assert result.stdout.strip() == b"1"
        gids = (await client.exec(ExecRequest("grep", ("^Gid:", "/proc/self/status")))).stdout.split()[1:]
        assert len(set(gids)) == 1  # the saved gid is the gid again from execve
        assert status_field(agent.pid, "Pid") == [str(agent.pid)]


@needs_root
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
async def test_a_pty_that_cannot_be_opened_is_a_conflict() -> None:
    # the agent in a mount namespace of its own whose devpts holds one PTY at most
    devpts = (
        "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,max=1 devpts /dev/pts"
        ' && mount --bind /dev/pts/ptmx /dev/ptmx && exec "$@"'
    )
    wrapper = ("unshare", "--mount", "--propagation", "private", "sh", "-c", devpts, "sh")
    with agent_process(*wrapper) as (_agent, sock):
        client = AgentClient(sock, op_timeout=10.0)
        await client.start_session("first", SessionSpec("sleep", ("30",), pty=PtySize(80, 24)))
        with pytest.raises(Conflict, match=r"^pty: no pseudo-terminal is free \(close one first\)$"):
            await client.start_session("second", SessionSpec("sleep", ("30",), pty=PtySize(80, 24)))
        assert [s.id for s in await client.list_sessions()] == ["first"]


def holds_a_socket(pid: int, fd: int = 3) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
    except OSError:
        return False
