"""RuncRuntime.discard: the answer comes once the sandbox's processes are dead, the rest
of the teardown goes on in the background, and what a crash in between leaves is
reclaimed by the next process (root, real runc)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.domain import Limits, RuntimeState, SandboxSpec, Template
from corral.runtime import freeze
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import CreateFn, new_id
from tests.integration.test_runtime import sh
from tests.integration.test_runtime_network import NETNS_DIR, LoopbackNetwork
from tests.integration.traces import traces

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # gone: no such file, or ESRCH from a read as it is let go
        return False
    return state != "Z"


async def test_discard_kills_at_once_and_finishes_in_the_background(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    sandbox_id = await sandboxes()
    child = int((await sh(runtime, sandbox_id, "sleep 600 >/dev/null 2>&1 & echo $!")).stdout)
    init = await runtime.init_pid(sandbox_id)
    assert init is not None
    hosts = [int(p) for p in cgroup_procs(sandbox_id)]
    assert len(hosts) >= 2, f"the init and the sleep ({child} inside) are in the cgroup"
    await runtime.discard(sandbox_id)
    assert not any(alive(pid) for pid in hosts), "every process is dead when discard returns"
    assert await runtime.settle(30)
    assert traces(settings, sandbox_id) == []
    assert await runtime.state(sandbox_id) == RuntimeState.MISSING
    assert (await runtime.health())["teardowns"] == 0
    await runtime.discard(sandbox_id)  # idempotent
    await runtime.settle(30)
    await runtime.destroy(sandbox_id)


async def test_discard_of_a_frozen_sandbox(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    sandbox_id = await sandboxes()
    init = await runtime.init_pid(sandbox_id)
    assert init is not None
    assert await asyncio.to_thread(freeze.freeze_cgroup, CGROUP_PARENT, sandbox_id)
    await asyncio.wait_for(runtime.discard(sandbox_id), 5)
    assert not alive(init)
    assert await runtime.settle(30) and traces(settings, sandbox_id) == []


async def test_destroy_waits_for_a_background_teardown(
    runtime: RuncRuntime, sandboxes: CreateFn, settings: Settings
) -> None:
    sandbox_id = await sandboxes()
    await runtime.discard(sandbox_id)
    await runtime.destroy(sandbox_id)  # takes the sandbox's lock after the background part
    assert traces(settings, sandbox_id) == []


async def test_a_crash_before_the_background_part_is_reclaimed(
    settings: Settings, base_template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = LoopbackNetwork()
    runtime = RuncRuntime(settings, network=network)
    sandbox_id = new_id()
    await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
    init = await runtime.init_pid(sandbox_id)
    assert init is not None
    # corral dies right after the answer: the background part never runs
    monkeypatch.setattr(runtime._teardowns, "start", lambda _sid, lock, _work: lock.release())
    await runtime.discard(sandbox_id)
    assert not alive(init)
    assert traces(settings, sandbox_id), "its dir, mounts, disk and runc state are left"
    assert (NETNS_DIR / network.name(sandbox_id)).exists()
    assert await runtime.state(sandbox_id) == RuntimeState.STOPPED
    after = RuncRuntime(settings, network=LoopbackNetwork())  # the next corral process
    others = await after.list_ids() - {sandbox_id}
    assert sandbox_id in await after.reclaim(keep=others)
    assert traces(settings, sandbox_id) == []
    assert not (NETNS_DIR / network.name(sandbox_id)).exists()


def cgroup_procs(sandbox_id: str) -> list[str]:
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        procs = root / CGROUP_PARENT / sandbox_id / "cgroup.procs"
        if procs.exists():
            return procs.read_text().split()
    raise AssertionError(f"no cgroup for {sandbox_id}")
