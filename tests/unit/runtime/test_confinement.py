"""The confinement a template build gets (corral.runtime.confinement), on a cgroup tree
of a temporary dir and without a network; tests/security/test_builds.py attacks it for
real."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from corral.domain import EgressMode
from corral.errors import InvalidInput
from corral.runtime.confinement import BuildConfinement, BuildLimits
from corral.settings import Settings


def test_limits_come_from_the_settings_and_the_egress_is_deny_all_but_the_list(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        build_memory_mb=300,
        build_cpu_count=1,
        build_pids_limit=99,
        build_timeout_s=12,
        build_egress_allow=["PyPI.org.", "10.1.0.0/16"],
    )
    limits = BuildLimits.of(settings)
    assert (limits.memory_mb, limits.cpu_count, limits.pids, limits.timeout_s) == (300, 1, 99, 12)
    assert limits.egress.mode is EgressMode.DENY_ALL
    assert set(limits.egress.allow) == {"pypi.org", "10.1.0.0/16"}


def test_a_bad_egress_entry_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as err:
        BuildLimits.of(Settings(data_dir=tmp_path, build_egress_allow=["exa mple.com"]))
    assert "build_egress_allow" in err.value.message


async def test_a_build_without_a_network_has_loopback_only_and_a_pids_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "pids").mkdir(parents=True)
    (root / "memory").mkdir()
    limits = BuildLimits.of(
        Settings(data_dir=tmp_path, build_memory_mb=256, build_cpu_count=2, build_pids_limit=64)
    )
    confinement = BuildConfinement(limits, tmp_path / "builder", None, cgroup_root=root)
    async with confinement.enter() as confined:
        flags = confined.flags
        assert flags[flags.index("--network") + 1] == "none"
        assert flags[flags.index("--cgroupns") + 1] == "private"
        assert flags[flags.index("--security-opt") + 1] == f"seccomp={tmp_path / 'builder' / 'seccomp.json'}"
        assert "--dns" not in flags and "--volume" not in flags
        assert flags[flags.index("--memory") + 1] == flags[flags.index("--memory-swap") + 1] == "256m"
        assert flags[flags.index("--cpu-quota") + 1] == str(2 * int(flags[flags.index("--cpu-period") + 1]))
        parent = flags[flags.index("--cgroup-parent") + 1]
        assert parent.startswith("/corral-builds/") and parent.endswith("/run")
        own = root / "pids" / parent.strip("/").removesuffix("/run")
        assert (own / "pids.max").read_text() == "64"


async def test_on_cgroup_v2_the_parents_delegate_pids(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    limits = BuildLimits.of(Settings(data_dir=tmp_path, build_pids_limit=70))
    async with BuildConfinement(limits, tmp_path / "builder", None, cgroup_root=root).enter() as confined:
        flags = confined.flags
        own = root / flags[flags.index("--cgroup-parent") + 1].strip("/").removesuffix("/run")
        assert (own / "pids.max").read_text() == "70"
        assert (root / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
        assert (own.parent / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"
        assert (own / "cgroup.subtree_control").read_text() == "+pids +memory +cpu"


async def test_at_the_time_limit_every_process_in_the_builds_cgroup_is_killed(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    (root / "pids").mkdir(parents=True)
    limits = BuildLimits.of(Settings(data_dir=tmp_path, build_timeout_s=0.3))
    step = await asyncio.create_subprocess_exec("sleep", "60")
    try:
        async with BuildConfinement(limits, tmp_path / "builder", None, cgroup_root=root).enter() as confined:
            own = root / "pids" / confined.flags[confined.flags.index("--cgroup-parent") + 1].strip("/")
            own.mkdir()  # the step's cgroup, as runc makes it
            (own / "cgroup.procs").write_text(f"{step.pid}\n")
            assert not confined.expired
            assert await asyncio.wait_for(step.wait(), 10) == -signal.SIGKILL
            assert confined.expired
    finally:
        if step.returncode is None:
            step.kill()
            await step.wait()
