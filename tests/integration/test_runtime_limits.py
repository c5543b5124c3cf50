"""Limits changed in place on a running sandbox (``RuncRuntime.set_limits``): its
cgroups, its /dev/shm, its disk up to the size it was made with, its CPU-time quota and
its config, read from the host's cgroup files and from inside."""

from __future__ import annotations

import json

import pytest

from corral.domain import Limits, SandboxSpec, Template
from corral.errors import Conflict
from corral.runtime.cpu_quota import ANNOTATION
from corral.runtime.runc import RuncRuntime
from tests.integration.conftest import new_id
from tests.integration.test_runtime import MIB, cgroup_value, sh

pytestmark = pytest.mark.integration


async def test_limits_change_in_place(runtime: RuncRuntime, base_template: Template) -> None:
    sandbox_id = new_id()
    small = Limits(cpu_count=1, memory_mb=512, disk_mb=64, pids=512)
    await runtime.create(SandboxSpec(sandbox_id, base_template, small, disk_room_mb=512))
    try:
        # a disk made larger than its limit holds only the limit
        fill = await sh(
            runtime, sandbox_id, "dd if=/dev/zero of=/root/fill bs=1M count=100; rm -f /root/fill"
        )
        assert b"No space left on device" in fill.stderr, fill
        started = await runtime.init_pid(sandbox_id)
        shm = await sh(runtime, sandbox_id, "df -BM --output=size /dev/shm | tail -1")
        assert shm.stdout.strip() == b"256M", shm

        bigger = Limits(cpu_count=2, memory_mb=256, disk_mb=384, pids=100, cpu_seconds=500.0)
        await runtime.set_limits(sandbox_id, bigger)
        assert int(cgroup_value("memory", sandbox_id, "memory.limit_in_bytes")) == 256 * MIB
        assert int(cgroup_value("cpu", sandbox_id, "cpu.cfs_quota_us")) == 200_000
        assert int(cgroup_value("pids", sandbox_id, "pids.max")) == 100
        shm = await sh(runtime, sandbox_id, "df -BM --output=size /dev/shm | tail -1")
        assert shm.stdout.strip() == b"128M", shm  # half the memory limit, as at a create
        fill = await sh(runtime, sandbox_id, "dd if=/dev/zero of=/root/fill bs=1M count=200 && echo wrote")
        assert fill.stdout == b"wrote\n", fill
        over = await sh(runtime, sandbox_id, "dd if=/dev/zero of=/root/more bs=1M count=300")
        assert b"No space left on device" in over.stderr, over
        assert runtime.quotas.watching(sandbox_id)
        config = json.loads(runtime.paths(sandbox_id).config.read_text())
        assert config["annotations"][ANNOTATION] == "500.0"
        assert config["linux"]["resources"]["memory"]["limit"] == 256 * MIB
        assert await runtime.init_pid(sandbox_id) == started  # the same processes: changed in place

        with pytest.raises(Conflict):  # more disk than it was made with
            await runtime.set_limits(sandbox_id, Limits(disk_mb=1024))
        assert (await sh(runtime, sandbox_id, "echo alive")).stdout == b"alive\n"
    finally:
        await runtime.destroy(sandbox_id)
