"""RuncRuntime against real runc: isolation, limits, cleanup, restart survival.

Needs root, runc, mmdebstrap and mkfs.ext4; the ``base`` template is built once and
kept (see conftest.py). Every sandbox is made through the ``sandboxes`` fixture,
which destroys it at the end of the test.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral.domain import ExecRequest, ExecResult, Limits, RuntimeState, SandboxSpec, Template
from corral.errors import Conflict, InvalidInput, RuntimeFailure
from corral.runtime import bundle
from corral.runtime.disk import DiskImages
from corral.runtime.layout import SandboxPaths
from corral.runtime.runc import RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import CreateFn, new_id
from tests.integration.traces import traces
from tests.support.conditions import eventually_async

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
CGROUP = Path("/sys/fs/cgroup")


async def sh(runtime: RuncRuntime, sandbox_id: str, script: str, timeout: float = 20) -> ExecResult:
    return await runtime.agent(sandbox_id).exec(ExecRequest("sh", ("-c", script), timeout_s=timeout))


def cgroup_value(controller: str, sandbox_id: str, name: str) -> str:
    return (CGROUP / controller / "corral" / sandbox_id / name).read_text().strip()


async def test_root_inside_is_unprivileged_outside(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    sandbox_id = await sandboxes(envs={"GREETING": "hi"})
    result = await sh(runtime, sandbox_id, "id -u; echo $GREETING; hostname; cat /etc/hostname")
    assert result.exit_code == 0, result
    assert result.stdout.decode().split() == ["0", "hi", sandbox_id, sandbox_id]

    pid = await runtime.init_pid(sandbox_id)
    assert pid is not None
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == [str(settings.uid_base)] * 4
    assert "NoNewPrivs:\t1" in status
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500"
    assert "Seccomp:\t2" in status
    assert await runtime.state(sandbox_id) == RuntimeState.RUNNING


async def test_capabilities_and_seccomp_confine_root(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes()
    caps = await sh(runtime, sandbox_id, "grep CapEff /proc/self/status")
    # CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE SYS_CHROOT SETFCAP
    assert caps.stdout.split()[1] == b"00000000800405fb"
    for forbidden in ("unshare -U true", "mount -t tmpfs none /mnt", "chroot / true && unshare -n true"):
        result = await sh(runtime, sandbox_id, forbidden)
        assert result.exit_code != 0, forbidden
    probe = (
        "import socket\n"
        "try:\n socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print('raw')\n"
        "except PermissionError: print('no-raw')\n"
        "socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print('icmp-dgram')\n"
        "import os; m, s = os.openpty(); print(os.ttyname(s))\n"
    )
    result = await runtime.agent(sandbox_id).exec(ExecRequest("python3", ("-c", probe), timeout_s=20))
    assert result.stdout.decode().split() == ["no-raw", "icmp-dgram", "/dev/pts/0"], result


async def test_network_is_loopback_only(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes()
    probe = (
        "import os, socket\n"
        "print(sorted(os.listdir('/sys/class/net')))\n"
        "print(int(open('/sys/class/net/lo/flags').read(), 16) & 1)\n"
        "s = socket.create_server(('127.0.0.1', 0)); socket.create_connection(s.getsockname()); print('lo-ok')\n"
        "try:\n socket.create_connection(('1.1.1.1', 80), timeout=2); print('outside')\n"
        "except OSError as e: print('unreachable')\n"
    )
    result = await runtime.agent(sandbox_id).exec(ExecRequest("python3", ("-c", probe), timeout_s=20))
    assert result.stdout.decode().split("\n")[:4] == ["['lo']", "1", "lo-ok", "unreachable"], result


async def test_limits_are_in_the_cgroup(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes(memory_mb=256, cpu_count=2, pids=100)
    assert int(cgroup_value("memory", sandbox_id, "memory.limit_in_bytes")) == 256 * MIB
    memsw = CGROUP / "memory" / "corral" / sandbox_id / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        assert int(memsw.read_text()) == 256 * MIB
    assert int(cgroup_value("cpu", sandbox_id, "cpu.cfs_quota_us")) == 200_000
    assert int(cgroup_value("cpu", sandbox_id, "cpu.cfs_period_us")) == 100_000
    assert int(cgroup_value("pids", sandbox_id, "pids.max")) == 100

    # Going past the memory limit kills the hog, not the agent.
    hog = await runtime.agent(sandbox_id).exec(
        ExecRequest("python3", ("-c", "b = b'x' * (400 << 20); print('survived')"), timeout_s=30)
    )
    assert hog.exit_code == 128 + signal.SIGKILL and b"survived" not in hog.stdout
    await runtime.agent(sandbox_id).ping()


async def test_fork_bomb_is_contained(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes(pids=64)
    bomb = asyncio.create_task(sh(runtime, sandbox_id, "b() { b | b & }; b; sleep 10", timeout=3))
    peak = 0
    while not bomb.done():
        peak = max(peak, int(cgroup_value("pids", sandbox_id, "pids.current")))
        await asyncio.sleep(0.05)
    result = bomb.result()
    # contained either way: it ran until its timeout, or every shell gave up on fork
    assert result.timed_out or b"Cannot fork" in result.stderr, result
    assert 0 < peak <= 64
    assert int(cgroup_value("pids", sandbox_id, "pids.events").split()[1]) > 0  # forks refused
    after = await sh(runtime, sandbox_id, "echo alive")
    assert after.stdout == b"alive\n"
    host = await asyncio.create_subprocess_exec("true")  # and the host still forks
    assert await host.wait() == 0


async def test_disk_limit_gives_enospc_inside_only(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes(disk_mb=64)
    df = await sh(runtime, sandbox_id, "df -m / | tail -1")
    assert 55 <= int(df.stdout.split()[1]) <= 64, df
    fill = await sh(runtime, sandbox_id, "dd if=/dev/zero of=/root/fill bs=1M count=100")
    assert fill.exit_code != 0
    assert b"No space left on device" in fill.stderr
    assert (await sh(runtime, sandbox_id, "echo still here")).stdout == b"still here\n"
    again = await sh(runtime, sandbox_id, "rm /root/fill && echo data > /root/small && cat /root/small")
    assert again.stdout == b"data\n", again


async def test_destroy_leaves_nothing_and_is_idempotent(
    runtime: RuncRuntime, base_template: Template, settings: Settings
) -> None:
    sandbox_id = new_id()
    await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
    assert traces(settings, sandbox_id)  # it exists: dir, mounts, loop, cgroups, state
    await runtime.destroy(sandbox_id)
    assert traces(settings, sandbox_id) == []
    assert await runtime.state(sandbox_id) == RuntimeState.MISSING
    await runtime.destroy(sandbox_id)  # again: a no-op
    with pytest.raises(InvalidInput):
        await runtime.destroy("../../etc")


async def test_a_started_sandbox_leaves_the_host_only_its_disk_mounted(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    """Its root and sysfs are its own copies once it runs: the host's are unmounted (a
    container's mount namespace copies every host mount), and it works on."""
    sandbox_id = await sandboxes()
    paths = SandboxPaths.of(settings.sandboxes_dir, sandbox_id)
    host = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert str(paths.disk) in host
    assert str(paths.rootfs) not in host and str(paths.sysfs) not in host
    result = await sh(runtime, sandbox_id, "echo kept > /root/k && cat /root/k && ls / | grep -c etc")
    assert result.exit_code == 0 and result.stdout == b"kept\n1\n", result
    assert (paths.upper / "root" / "k").exists()  # written through its root to its disk
    await runtime.destroy(sandbox_id)
    assert traces(settings, sandbox_id) == []


async def test_create_twice_conflicts(
    runtime: RuncRuntime, sandboxes: CreateFn, base_template: Template
) -> None:
    sandbox_id = await sandboxes()
    with pytest.raises(Conflict):
        await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
    assert await runtime.state(sandbox_id) == RuntimeState.RUNNING


async def test_dead_init_reads_as_stopped(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes()
    pid = await runtime.init_pid(sandbox_id)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def stopped() -> bool:
        return await runtime.state(sandbox_id) == RuntimeState.STOPPED

    await eventually_async(stopped, 5)


async def test_failed_creates_leave_nothing(
    runtime: RuncRuntime, base_template: Template, settings: Settings, tmp_path: Path
) -> None:
    # 1. no such template root: fails before runc
    bad_template = Template("nope", "0" * 64, str(tmp_path / "missing"), datetime.now(UTC))
    sandbox_id = new_id()
    with pytest.raises(RuntimeFailure):
        await runtime.create(SandboxSpec(sandbox_id, bad_template, Limits()))
    assert traces(settings, sandbox_id) == []

    # 2. runc itself fails: the agent file to bind-mount is not there
    failing = RuncRuntime(settings, agent_path=tmp_path / "absent.py", precompile_agent=False)
    sandbox_id = new_id()
    with pytest.raises(RuntimeFailure, match="run"):
        await failing.create(SandboxSpec(sandbox_id, base_template, Limits()))
    assert traces(settings, sandbox_id) == []

    # 3. the container starts but its agent dies at once: the last step fails
    (tmp_path / "dying.py").write_text(
        "import sys\nsys.stderr.write('agent: giving up\\n')\nraise SystemExit(3)\n"
    )
    dying = RuncRuntime(settings, agent_path=tmp_path / "dying.py", start_timeout=10)
    sandbox_id = new_id()
    with pytest.raises(RuntimeFailure, match="giving up"):
        await dying.create(SandboxSpec(sandbox_id, base_template, Limits()))
    assert traces(settings, sandbox_id) == []


async def test_a_template_root_is_checked_once_and_a_non_root_every_time(
    settings: Settings, base_template: Template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from corral.runtime import runc

    checked: list[Path] = []
    real = runc._is_root

    def counted(lower: Path) -> bool:
        checked.append(lower)
        return real(lower)

    monkeypatch.setattr(runc, "_is_root", counted)
    runtime = RuncRuntime(settings)
    made = [new_id(), new_id()]
    try:
        for sandbox_id in made:
            await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
            result = await sh(runtime, sandbox_id, "echo ok")
            assert result.stdout == b"ok\n"
    finally:
        for sandbox_id in made:
            await runtime.destroy(sandbox_id)
    assert checked == [Path(base_template.rootfs)]  # two creates, one check
    not_a_root = tmp_path / "not-a-root"
    not_a_root.mkdir()
    bad = Template("nope", "1" * 64, str(not_a_root), datetime.now(UTC))
    for _ in range(2):
        sandbox_id = new_id()
        with pytest.raises(RuntimeFailure, match="not a root filesystem"):
            await runtime.create(SandboxSpec(sandbox_id, bad, Limits()))
        assert traces(settings, sandbox_id) == []
    assert checked[1:] == [not_a_root, not_a_root]


async def test_cancelled_create_leaves_nothing(
    runtime: RuncRuntime, base_template: Template, settings: Settings
) -> None:
    for delay in (0.001, 0.01, 0.03, 0.05):
        sandbox_id = new_id()
        task = asyncio.create_task(runtime.create(SandboxSpec(sandbox_id, base_template, Limits())))
        await asyncio.sleep(delay)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass  # the cancelled create must have undone itself: no destroy here
        else:
            await runtime.destroy(sandbox_id)  # it finished before the cancel landed
        assert traces(settings, sandbox_id) == []


async def test_a_create_cancelled_as_its_bundle_is_written_leaves_nothing(
    runtime: RuncRuntime, base_template: Template, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands just as ``bundle.write`` returns its listening socket and the
    agent's log fd (a file on the sandbox's disk): both are closed, or the fd would hold
    the unmounted disk and its loop device for as long as this process lives."""
    written, go_on, write = threading.Event(), threading.Event(), bundle.write

    def write_then_wait(paths: SandboxPaths, config: dict[str, Any]) -> tuple[socket.socket, int]:
        made = write(paths, config)
        written.set()
        go_on.wait(10)
        return made

    monkeypatch.setattr(bundle, "write", write_then_wait)
    sandbox_id = new_id()
    task = asyncio.create_task(runtime.create(SandboxSpec(sandbox_id, base_template, Limits())))
    await eventually_async(written.is_set, 30, "bundle.write was not reached")
    task.cancel()
    go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert traces(settings, sandbox_id) == []  # the loop device too: nothing holds the disk


async def test_sandbox_outlives_the_process_that_made_it(
    runtime: RuncRuntime, base_template: Template, settings: Settings
) -> None:
    sandbox_id = new_id()
    script = (
        "import asyncio, json, os, sys\n"
        "from datetime import datetime\n"
        "from pathlib import Path\n"
        "from corral.domain import Limits, SandboxSpec, Template\n"
        "from corral.runtime.runc import RuncRuntime\n"
        "from corral.settings import Settings\n"
        "a = json.loads(sys.argv[1])\n"
        "t = Template(a['name'], a['digest'], a['rootfs'], datetime.fromisoformat(a['created']))\n"
        "s = Settings(data_dir=Path(a['data']), runc_root=Path(a['root']))\n"
        "asyncio.run(RuncRuntime(s).create(SandboxSpec(a['id'], t, Limits())))\n"
        "os.kill(os.getpid(), 9)  # die without any cleanup, like a crashed server\n"
    )
    args = {
        "name": base_template.name,
        "digest": base_template.digest,
        "rootfs": base_template.rootfs,
        "created": base_template.created_at.isoformat(),
        "data": str(settings.data_dir),
        "root": str(settings.runc_root),
        "id": sandbox_id,
    }
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", script, json.dumps(args))
    assert await proc.wait() == -signal.SIGKILL
    try:
        restarted = RuncRuntime(settings)  # a new server process would build just this
        assert sandbox_id in await restarted.list_ids()
        assert await restarted.state(sandbox_id) == RuntimeState.RUNNING
        assert (await sh(restarted, sandbox_id, "echo survived")).stdout == b"survived\n"
    finally:
        await runtime.destroy(sandbox_id)
    assert traces(settings, sandbox_id) == []


async def test_reclaim_removes_orphans_and_keeps_the_rest(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    kept = await sandboxes()
    orphan = await sandboxes()
    # a half-made sandbox, as a crash between mounting its disk and starting runc leaves it
    partial = new_id()
    paths = runtime.paths(partial)
    (paths.disk).mkdir(parents=True)
    disks = DiskImages(settings.data_dir / "disks")
    await disks.make(paths.disk_image, paths.disk, 64)
    assert traces(settings, partial)

    everything_else = (await runtime.list_ids()) - {orphan, partial}
    removed = await runtime.reclaim(keep=everything_else)
    assert orphan in removed and partial in removed and kept not in removed
    assert traces(settings, orphan) == [] and traces(settings, partial) == []
    assert await runtime.state(kept) == RuntimeState.RUNNING
    assert await runtime.reclaim(keep=everything_else) == []


async def test_reclaim_takes_stale_cgroups_only(runtime: RuncRuntime, settings: Settings) -> None:
    stale, fresh = new_id(), new_id()
    made = [
        CGROUP / controller / "corral" / name for controller in ("pids", "memory") for name in (stale, fresh)
    ]
    for path in made:
        path.mkdir(parents=True)
    try:
        for controller in ("pids", "memory"):
            old = time.time() - 600
            os.utime(CGROUP / controller / "corral" / stale, (old, old))
        removed = await runtime.reclaim(keep=await runtime.list_ids())
        assert stale in removed and fresh not in removed  # a fresh one may be a create under way
        assert traces(settings, stale) == []
    finally:
        for path in made:
            if path.exists():
                path.rmdir()


async def test_concurrent_creates(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    ids = await asyncio.gather(*(sandboxes() for _ in range(4)))
    states = await asyncio.gather(*(runtime.state(sandbox_id) for sandbox_id in ids))
    assert set(states) == {RuntimeState.RUNNING}


async def test_health(runtime: RuncRuntime) -> None:
    health = await runtime.health()
    assert health["ok"] is True and health["runtime"] == "runc"
    assert "runc" in str(health["version"])
