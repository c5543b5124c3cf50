"""Pause and resume on runc, through the services of a real Core (no HTTP; the
surfaces' routes are tested in tests/e2e/test_pause.py): a running process keeps its
memory across a pause, a busy loop burns no CPU while paused (the kernel's cpuacct of
its cgroup) and stays frozen through a checkpoint, the idle timeout pauses then
hibernates (an injected clock), and a paused sandbox stays paused across a restart of
corral and resumes with its memory (and a kill of a paused one kills it, frozen).

The Core has a data dir and runc root of its own (reconcile removes what its store does
not know, so it must not share the integration suite's), and borrows that suite's
templates (a symlink), so the ``base`` template is built once per machine.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import ExecRequest, RuntimeState, SandboxStatus, Template
from corral.runtime import cgroups, freeze
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime
from corral.runtime.templates import TemplateStore
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.integration.conftest import DATA_DIR
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async

pytestmark = pytest.mark.integration

PAUSE_DIR = Path(os.environ.get("CORRAL_PAUSE_DATA_DIR", "/var/tmp/corral-pause-test"))
RUNC_ROOT = Path("/run/corral-pause-test/runc")
# A process that keeps a counter in its memory only, and shows it (with its pid and a
# number it drew at start) in a file every 10 ms: a process started anew starts at 0.
COUNTER = (
    "import os, random, time\n"
    "drawn, n = random.getrandbits(64), 0\n"
    "while True:\n"
    "    n += 1\n"
    "    with open('/tmp/counter.tmp', 'w') as f: f.write(f'{os.getpid()} {drawn} {n}')\n"
    "    os.replace('/tmp/counter.tmp', '/tmp/counter')\n"
    "    time.sleep(0.01)\n"
)
BUSY = "setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"


def settings() -> Settings:
    PAUSE_DIR.mkdir(parents=True, exist_ok=True)
    templates = PAUSE_DIR / "templates"
    if not templates.is_symlink():
        shutil.rmtree(templates, ignore_errors=True)
        templates.symlink_to(DATA_DIR / "templates")
    return Settings(
        data_dir=PAUSE_DIR,
        port=8080,
        runc_root=RUNC_ROOT,
        network_enabled=False,
        reaper_interval_s=3600,
        standby_sandboxes=0,
        database_url=f"sqlite+aiosqlite:///{PAUSE_DIR / 'corral.db'}",
    )


async def open_core(clock: FakeClock) -> Core:
    s = settings()
    return await Core.open(s, runtime=RuncRuntime(s), templates=TemplateStore(s), clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def core(base_template: Template, clock: FakeClock) -> AsyncIterator[Core]:
    """A Core on runc over a new store (the previous run's sandboxes are reclaimed)."""
    (PAUSE_DIR / "corral.db").unlink(missing_ok=True)
    c = await open_core(clock)
    yield c
    await close(c)


async def close(core: Core) -> None:
    for sb in await core.sandboxes.store.list_all(live_only=False):
        await core.runtime.destroy(sb.id)
    await core.close()


async def owner(core: Core) -> Principal:
    assert core.bootstrap_key
    return await core.auth.authenticate_key(core.bootstrap_key)


async def sh(core: Core, me: Principal, sandbox_id: str, script: str) -> str:
    result = await core.commands.run(me, sandbox_id, ExecRequest("sh", ("-c", script), timeout_s=30))
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def counter(core: Core, me: Principal, sandbox_id: str) -> tuple[str, str, int]:
    """(pid, drawn, n) as the counter process last showed them."""
    pid, drawn, n = (await sh(core, me, sandbox_id, "cat /tmp/counter")).split()
    return pid, drawn, int(n)


async def start_counter(core: Core, me: Principal, sandbox_id: str) -> tuple[str, str, int]:
    script = 'setsid python3 -c "$1" </dev/null >/dev/null 2>&1 &'
    await core.commands.run(me, sandbox_id, ExecRequest("sh", ("-c", script, "sh", COUNTER), timeout_s=30))

    async def shown() -> bool:
        return "0" != (await sh(core, me, sandbox_id, "cat /tmp/counter 2>/dev/null || echo 0")).strip()

    await eventually_async(shown, 10, "the counter never started")
    return await counter(core, me, sandbox_id)


def cpu_seconds(sandbox_id: str) -> float:
    used = cgroups.usage(CGROUP_PARENT, sandbox_id)
    assert used is not None
    return used.cpu_seconds


async def test_memory_survives_and_a_busy_loop_burns_no_cpu_while_paused(core: Core) -> None:
    me = await owner(core)
    paused = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    twin = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))  # the same loop, not paused
    pid, drawn, n = await start_counter(core, me, paused.id)
    for sb in (paused, twin):
        await sh(core, me, sb.id, BUSY)
    await eventually_async(lambda: cpu_seconds(paused.id) > 0.2, 10, "the busy loop never ran")

    await core.lifecycle.pause(me, paused.id)
    assert freeze.is_frozen(CGROUP_PARENT, paused.id)
    frozen_at, twin_at = cpu_seconds(paused.id), cpu_seconds(twin.id)
    await eventually_async(lambda: cpu_seconds(twin.id) > twin_at + 0.3, 10, "the twin never ran")
    assert cpu_seconds(paused.id) == frozen_at  # not a nanosecond while the twin burnt 0.3 s
    await core.checkpoints.create(me, paused.id, "while-paused")  # freezes, copies, thaws...
    assert freeze.is_frozen(CGROUP_PARENT, paused.id)  # ...but not a paused sandbox
    assert (await core.sandboxes.get(me, paused.id)).status is SandboxStatus.PAUSED

    await core.lifecycle.resume(me, paused.id)
    again = await counter(core, me, paused.id)
    assert again[:2] == (pid, drawn) and again[2] >= n  # the same process, counting on

    await core.lifecycle.pause(me, paused.id)
    later = await counter(core, me, paused.id)  # an exec resumes it
    assert later[:2] == (pid, drawn) and later[2] >= again[2]
    assert (await core.sandboxes.get(me, paused.id)).status is SandboxStatus.RUNNING
    assert not freeze.is_frozen(CGROUP_PARENT, paused.id)


async def test_idle_pauses_then_hibernates(core: Core, clock: FakeClock) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=60))
    clock.advance(61)
    assert await core.sandboxes.reap_idle() == [sb.id]
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.PAUSED
    assert freeze.is_frozen(CGROUP_PARENT, sb.id)
    clock.advance(core.settings.paused_idle_s)
    assert await core.sandboxes.reap_idle() == [sb.id]
    assert (await core.sandboxes.get(me, sb.id)).status is SandboxStatus.HIBERNATED
    assert await core.runtime.state(sb.id) == RuntimeState.STOPPED  # killed frozen; its disk kept
    assert await sh(core, me, sb.id, "echo woken") == "woken\n"


async def test_a_restart_keeps_it_paused_and_it_resumes_with_its_memory(core: Core, clock: FakeClock) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(timeout_s=0))
    pid, drawn, n = await start_counter(core, me, sb.id)
    await core.lifecycle.pause(me, sb.id)
    await core.close()  # corral stops; the sandbox stays, frozen
    assert freeze.is_frozen(CGROUP_PARENT, sb.id)

    restarted = await open_core(clock)
    try:
        assert (await restarted.sandboxes.get(me, sb.id)).status is SandboxStatus.PAUSED
        assert freeze.is_frozen(CGROUP_PARENT, sb.id)
        again = await counter(restarted, me, sb.id)  # resumes it
        assert again[:2] == (pid, drawn) and again[2] >= n
        assert (await restarted.sandboxes.get(me, sb.id)).status is SandboxStatus.RUNNING
        await restarted.lifecycle.pause(me, sb.id)
        await restarted.sandboxes.kill(me, sb.id)  # its processes die frozen
        assert await restarted.runtime.state(sb.id) != RuntimeState.RUNNING
    finally:
        await close(restarted)
