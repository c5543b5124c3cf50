"""Runtime.usage on runc: the host reads what the kernel counted of a real sandbox
(its cgroups), whatever the sandbox's programs print or claim."""

from __future__ import annotations

import pytest

from corral.domain import ExecRequest, RuntimeState
from corral.errors import CorralError
from corral.runtime import cgroups
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import CreateFn

MEMORY_BOMB = """
held = []
while True:
    held.append(bytearray(16 << 20))
"""

FORK_BOMB = """
import os, time
children = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
except OSError:
    pass
print(children, flush=True)
os.killpg(0, 9)
"""


async def test_a_memory_bomb_shows_as_an_oom_kill(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes(memory_mb=128)
    before = await runtime.usage(sandbox_id)
    assert before.oom_kills == 0 and not before.memory_exceeded
    bomb = await runtime.agent(sandbox_id).exec(ExecRequest("python3", ("-c", MEMORY_BOMB), timeout_s=60))
    assert bomb.exit_code in (137, -9), bomb  # SIGKILL: the OOM killer's
    after = await runtime.usage(sandbox_id)
    assert after.oom_kills >= 1 and after.memory_exceeded
    assert after.memory_peak_bytes is not None and after.memory_peak_bytes > 100 << 20
    assert not after.pids_exceeded and not after.cpu_exceeded


async def test_a_fork_bomb_shows_as_forks_refused(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    sandbox_id = await sandboxes(pids=64)
    assert (await runtime.usage(sandbox_id)).pids_refused == 0
    bomb = await runtime.agent(sandbox_id).exec(
        ExecRequest("setsid", ("python3", "-c", FORK_BOMB), timeout_s=60)
    )
    assert 0 < int(bomb.stdout or b"0") < 64, bomb
    after = await runtime.usage(sandbox_id)
    assert after.pids_refused >= 1 and after.pids_exceeded
    assert after.oom_kills == 0 and after.cpu_seconds > 0


async def test_a_cpu_spinner_is_stopped_at_its_cpu_time_quota(
    runtime: RuncRuntime, sandboxes: CreateFn
) -> None:
    sandbox_id = await sandboxes(cpu_count=1, cpu_seconds=1.0)
    assert (await runtime.usage(sandbox_id)).cpu_quota_seconds == 1.0
    with pytest.raises(CorralError):  # the agent is killed with everything else
        await runtime.agent(sandbox_id).exec(ExecRequest("python3", ("-c", "while True: pass"), timeout_s=30))
    after = await runtime.usage(sandbox_id)
    assert after.cpu_exceeded and 1.0 <= after.cpu_seconds < 1.5, after
    assert await runtime.state(sandbox_id) is RuntimeState.STOPPED


async def test_a_restarted_runtime_watches_the_quota_again(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    """reclaim (at a start) calls watch_quota for every sandbox it keeps; called alone
    here, so as not to touch other sandboxes of this node."""
    sandbox_id = await sandboxes(cpu_count=1, cpu_seconds=1.0)
    again = RuncRuntime(settings)  # as after a restart of corral: no watch yet
    await runtime.quotas.close()  # the old process's watches end with it
    assert await again.watch_quota(sandbox_id)
    with pytest.raises(CorralError):
        await again.agent(sandbox_id).exec(ExecRequest("python3", ("-c", "while True: pass"), timeout_s=30))
    assert (await again.usage(sandbox_id)).cpu_exceeded


async def test_a_sandbox_cannot_write_what_the_host_reads(runtime: RuncRuntime, sandboxes: CreateFn) -> None:
    """Its cgroups are read-only inside (and cgroupfs cannot be mounted again): no file
    or link of its making lies where usage() reads. (/sys/fs/cgroup itself is a tmpfs of
    its own under v1, which the host never reads.)"""
    sandbox_id = await sandboxes()
    probe = (
        "for d in /sys/fs/cgroup/*/; do mkdir $d/x 2>/dev/null && echo made $d;"
        " echo 'max 99' > $d/pids.events 2>/dev/null && echo wrote $d; done;"
        " mkdir -p /tmp/cg && mount -t cgroup -o pids none /tmp/cg 2>/dev/null && echo mounted v1;"
        " mount -t cgroup2 none /tmp/cg 2>/dev/null && echo mounted v2; echo done"
    )
    result = await runtime.agent(sandbox_id).exec(ExecRequest("sh", ("-c", probe), timeout_s=30))
    assert result.stdout == b"done\n", result
    assert all(not (d / "x").exists() for d in cgroups.dirs(CGROUP_PARENT, sandbox_id))
    assert (await runtime.usage(sandbox_id)).pids_refused == 0
