"""SandboxService.usage: the runtime's reading, for the org's own sandboxes only (the
process runtime counts its agent's CPU time; runc's cgroups are read in
tests/integration/test_runtime_usage.py)."""

from __future__ import annotations

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import ExecRequest
from corral.errors import InvalidInput, NotFound
from corral.services.sandboxes import CreateSandbox
from tests.unit.services.conftest import owner

SPIN = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"


async def test_usage_counts_the_cpu_time_of_commands(process_core: Core) -> None:
    core = process_core
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    before = await core.sandboxes.usage(me, sb.id)
    spun = await core.commands.run(me, sb.id, ExecRequest("python3", ("-c", SPIN)))
    assert spun.exit_code == 0, spun
    after = await core.sandboxes.usage(me, sb.id)
    assert after.cpu_seconds - before.cpu_seconds >= 0.3
    assert not (after.cpu_exceeded or after.memory_exceeded or after.pids_exceeded)


async def test_another_orgs_sandbox_is_not_found(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    stranger = Principal(org_id="org-other", role=Role.OWNER)
    with pytest.raises(NotFound):
        await core.sandboxes.usage(stranger, sb.id)


async def test_a_cpu_time_quota_is_kept_with_the_sandbox(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(cpu_seconds=2.5))
    assert sb.limits.cpu_seconds == 2.5
    assert (await core.sandboxes.get(me, sb.id)).limits.cpu_seconds == 2.5
    assert (await core.sandboxes.create(me, CreateSandbox())).limits.cpu_seconds is None


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), 1e12])
async def test_a_bad_cpu_time_quota_names_its_field(core: Core, seconds: float) -> None:
    me = await owner(core)
    with pytest.raises(InvalidInput) as caught:
        await core.sandboxes.create(me, CreateSandbox(cpu_seconds=seconds))
    assert caught.value.field == "cpuSeconds"
