"""Resources: one sandbox's bombs stay inside its own limits.

A victim sandbox of the attacking org with small limits (1 CPU, 256 MB memory, 64 MB
disk) runs a fork bomb, a thread bomb, a memory hog, a disk fill (in /root and in
/tmp), an inode bomb, a /dev/shm fill, an fd bomb and a CPU hog, and takes a file
larger than its disk through the API. Each must hit the sandbox's limit (EAGAIN,
the OOM killer inside, ENOSPC, EMFILE, the CPU quota), leave the sandbox usable
afterwards, and leave the server and the other org's sandbox working; the host's disk
must not lose more than the victim's disk size. Every load runs a few seconds at most.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.security.conftest import SecurityServer, Tenant
from tests.support.conditions import eventually

MEMORY_MB = 256
DISK_MB = 64


@pytest.fixture(scope="module")
def victim(alpha: Tenant) -> Iterator[str]:
    sandbox = str(alpha.create(timeout=600, cpuCount=1, memoryMB=MEMORY_MB, diskMB=DISK_MB)["sandboxID"])
    yield sandbox
    alpha.kill(sandbox)


def _usable(alpha: Tenant, victim: str) -> None:
    result = alpha.run(
        victim, "echo ok; rm -rf /root/fill* /tmp/fill* /root/inodes /dev/shm/* 2>/dev/null; true"
    )
    assert result["stdout"].startswith("ok"), result


def _host_free(server: SecurityServer) -> int:
    st = os.statvfs(server.data_dir)
    return st.f_bavail * st.f_frsize


def test_fork_bomb_stops_at_the_pids_limit(alpha: Tenant, victim: str, unnoticed: Callable[[], None]) -> None:
    """Processes are forked until the kernel refuses; the count stays under the pids
    limit, the other org's sandbox works while the bomb's children are alive."""
    code = r"""
import json, os, signal, time
pids, error = [], ""
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        pid = os.fork()
    except OSError as exc:
        error = exc.strerror
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    pids.append(pid)
print(json.dumps({"forked": len(pids), "error": error}), flush=True)
time.sleep(2)
for pid in pids:
    os.kill(pid, signal.SIGKILL)
for pid in pids:
    os.waitpid(pid, 0)
"""
    with alpha.http() as http:
        started = http.post(
            f"/sandboxes/{victim}/exec/run-async", json={"cmd": "python3", "args": ["-c", code]}
        )
        assert started.status_code == 201, started.text
        exec_id = started.json()["execId"]
        eventually(  # it says so at its limit, its children alive (for 3 s more)
            lambda: "forked" in http.get(f"/sandboxes/{victim}/exec/{exec_id}/result").json()["stdout"],
            30,
            "the bomb never reached its limit",
            0.1,
        )
        unnoticed()
        eventually(
            lambda: not http.get(f"/sandboxes/{victim}/exec/{exec_id}/result").json()["running"],
            30,
            "the bomb still runs",
            0.3,
        )
        state = http.get(f"/sandboxes/{victim}/exec/{exec_id}/result").json()
    outcome = json.loads(state["stdout"].splitlines()[0])
    assert outcome["error"] and outcome["forked"] < 512, outcome
    _usable(alpha, victim)


def test_thread_bomb_stops_at_the_pids_limit(
    alpha: Tenant, victim: str, unnoticed: Callable[[], None]
) -> None:
    code = r"""
import threading, time
event, count = threading.Event(), 0
try:
    while count < 5000:
        threading.Thread(target=event.wait, daemon=True).start()
        count += 1
except RuntimeError as exc:
    print(count, exc)
event.set()
"""
    result = alpha.python(victim, code, timeout=30)
    count = int(result["stdout"].split()[0]) if result["stdout"] else 5000
    assert count < 512, result
    _usable(alpha, victim)
    unnoticed()


def test_memory_hog_is_killed_inside_only(
    alpha: Tenant, victim: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """Touching four times the memory limit: the OOM killer of the sandbox's cgroup
    kills the hog (SIGKILL), not the agent, not the server."""
    code = f"""
import subprocess, sys
hog = "chunks = []\\nwhile len(chunks) < {MEMORY_MB * 4 // 32}: chunks.append(bytearray({32 << 20}))"
print(subprocess.run([sys.executable, "-c", hog]).returncode)
"""
    result = alpha.python(victim, code, timeout=60)
    assert result["stdout"].strip() == "-9", result  # SIGKILL: the OOM killer
    _usable(alpha, victim)
    assert alpha.run(victim, "cat /proc/1/cmdline")["stdout"].startswith("python3")  # the agent lives
    unnoticed()


@pytest.mark.parametrize("where", ["/root/fill", "/tmp/fill"])
def test_disk_fill_is_enospc_inside(
    where: str, alpha: Tenant, victim: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """Writing past diskMB fails with ENOSPC inside; the host loses at most the
    sandbox's disk size; freed space is usable again."""
    before = _host_free(security_server)
    result = alpha.run(
        victim, f"head -c {DISK_MB * 4}M /dev/zero > {where}; echo rc=$?; du -m {where}", timeout=60
    )
    assert "No space left on device" in result["stderr"] and "rc=1" in result["stdout"], result
    written = int(result["stdout"].split()[-2])
    assert written <= DISK_MB, result
    assert before - _host_free(security_server) < (DISK_MB + 64) << 20
    _usable(alpha, victim)
    assert alpha.run(victim, "head -c 1M /dev/zero > /root/after && echo written")["stdout"] == "written\n"
    unnoticed()


def test_inode_bomb_is_enospc_inside(alpha: Tenant, victim: str, unnoticed: Callable[[], None]) -> None:
    code = r"""
import os
os.makedirs("/root/inodes", exist_ok=True)
count = 0
try:
    while count < 400000:
        os.close(os.open(f"/root/inodes/{count}", os.O_CREAT | os.O_WRONLY, 0o600))
        count += 1
except OSError as exc:
    print(count, exc.strerror)
"""
    result = alpha.python(victim, code, timeout=60)
    assert "No space left on device" in result["stdout"], result
    _usable(alpha, victim)
    unnoticed()


def test_fd_bomb_stops_at_the_open_files_limit(
    alpha: Tenant, victim: str, unnoticed: Callable[[], None]
) -> None:
    code = r"""
import os, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard + 1, hard + 1))
    raised = "yes"
except (ValueError, OSError):
    raised = "no"
fds = []
try:
    while len(fds) < 200000:
        fds.append(os.open("/dev/null", os.O_RDONLY))
except OSError as exc:
    print(len(fds), exc.strerror, soft, hard, raised)
"""
    result = alpha.python(victim, code, timeout=60)
    opened, *rest = result["stdout"].split()
    assert "Too many open files" in result["stdout"] and int(opened) <= 65536, result
    assert rest[-1] == "no", result  # the hard limit cannot be raised
    _usable(alpha, victim)
    unnoticed()


def test_cpu_hog_gets_its_quota_only(alpha: Tenant, victim: str, unnoticed: Callable[[], None]) -> None:
    """Two busy processes for a second with cpuCount 1: at most about one CPU."""
    code = r"""
import os, time
start = time.monotonic()
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 1
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
wall = time.monotonic() - start
used = os.times().children_user + os.times().children_system
print(round(used / wall, 2))
"""
    result = alpha.python(victim, code, timeout=30)
    assert float(result["stdout"]) < 1.3, result
    unnoticed()


def test_upload_larger_than_the_disk_is_refused(
    alpha: Tenant, victim: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """A file of twice the sandbox's disk streamed through the files API: an error
    (507, spec 003's full disk), not a 2xx and not a 500; the host keeps its space."""
    before = _host_free(security_server)
    chunk = b"\0" * (1 << 20)

    def body() -> Iterator[bytes]:
        for _ in range(DISK_MB * 2):
            yield chunk

    with alpha.http() as http:
        try:
            answer = http.put(f"/sandboxes/{victim}/files", params={"path": "/root/fill-api"}, content=body())
            status = answer.status_code
        except httpx.HTTPError:
            status = 0  # the server cut the upload short: refused too
    assert status in (0, 507), status
    assert before - _host_free(security_server) < (DISK_MB + 64) << 20
    _usable(alpha, victim)
    unnoticed()


def test_shm_fill_is_bounded_and_the_sandbox_survives(
    alpha: Tenant, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """/dev/shm is a tmpfs of half the memory limit (and charged to it): filling it
    must fail inside, and the sandbox (its agent) must survive, as after a memory hog.
    (Its own sandbox: when this does not hold, the agent is what the OOM killer takes.)"""
    sandbox = str(alpha.create(timeout=300, cpuCount=1, memoryMB=MEMORY_MB, diskMB=DISK_MB)["sandboxID"])
    try:
        result = alpha.run(
            sandbox, f"head -c {MEMORY_MB * 2}M /dev/zero > /dev/shm/fill; echo rc=$?", timeout=60
        )
        assert "rc=0" not in result["stdout"], result
        assert security_server.healthy()
        unnoticed()
        _usable(alpha, sandbox)
    finally:
        with alpha.http() as http:
            assert http.delete(f"/sandboxes/{sandbox}").status_code in (204, 404)


def test_sysv_shared_memory_dies_with_its_process(
    alpha: Tenant, victim: str, unnoticed: Callable[[], None]
) -> None:
    """A SysV segment left by a process that exited (or was OOM-killed) would stay
    charged to the sandbox for ever: kernel.shm_rmid_forced removes it with its last user."""
    made = alpha.run(
        victim,
        "python3 -c 'import ctypes; print(ctypes.CDLL(None).shmget(0, 8 << 20, 0o1600))'; "
        "tail -n +2 /proc/sysvipc/shm | wc -l; cat /proc/sys/kernel/shm_rmid_forced",
    )
    segment, left, forced = made["stdout"].split()
    assert int(segment) >= 0, made  # the segment was made
    assert (left, forced) == ("0", "1"), made
    unnoticed()
