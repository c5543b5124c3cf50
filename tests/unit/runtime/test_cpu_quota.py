"""CpuQuotas: the watch kills a sandbox whose counter reached its quota, ends when its
cgroups are gone, and reads the quota back from an OCI config (the real kernel's
counter and kill: tests/integration/test_runtime_usage.py)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

from corral.domain import EgressPolicy, Limits, SandboxConfig
from corral.domain.config_json import config_json, config_of
from corral.domain.usage import Usage
from corral.runtime import bundle
from corral.runtime.cpu_quota import CpuQuotas, quota_of


async def test_a_sandbox_at_its_quota_is_killed_once() -> None:
    killed: list[str] = []
    quotas = CpuQuotas(lambda sid: Usage(cpu_seconds=2.0), killed.append)
    quotas.arm("sb-a", 2.0, cpus=1)
    while quotas.watching("sb-a"):
        await asyncio.sleep(0)
    assert killed == ["sb-a"]


async def test_a_sandbox_without_cgroups_ends_the_watch_unkilled() -> None:
    killed: list[str] = []
    quotas = CpuQuotas(lambda sid: None, killed.append)
    quotas.arm("sb-a", 2.0, cpus=1)
    while quotas.watching("sb-a"):
        await asyncio.sleep(0)
    assert killed == []


async def test_disarm_and_close_end_the_watches() -> None:
    quotas = CpuQuotas(lambda sid: Usage(cpu_seconds=0.0), lambda sid: None)
    quotas.arm("sb-a", 100.0, cpus=1)
    quotas.arm("sb-b", 100.0, cpus=1)
    quotas.disarm("sb-a")
    assert not quotas.watching("sb-a") and quotas.watching("sb-b")
    await quotas.close()
    assert not quotas.watching("sb-b")


def test_the_quota_travels_in_the_oci_config(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    assert quota_of(config) is None
    made = bundle.oci_config(
        sandbox_id="sb-a",
        limits=Limits(cpu_count=2, cpu_seconds=1.5),
        envs={},
        agent_path="/agent.py",
        uid_base=100000,
        uid_count=65536,
        pty_max=16,
    )
    config.write_text(json.dumps(made))
    assert quota_of(config) == (1.5, 2)
    made["annotations"].pop("corral.cpu_seconds")
    config.write_text(json.dumps(made))
    assert quota_of(config) is None


def test_the_quota_travels_in_a_checkpoints_config() -> None:
    config = SandboxConfig("base", "d1", Limits(cpu_seconds=3.0), {}, EgressPolicy(), {})
    assert config_of(config_json(config)) == config
    plain = replace(config, limits=Limits())
    assert "cpuSeconds" not in config_json(plain)["limits"]  # type: ignore[operator]
    assert config_of(config_json(plain)) == plain
