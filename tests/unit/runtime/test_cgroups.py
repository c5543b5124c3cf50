"""cgroups.usage reads the kernel's counters of a sandbox in both layouts (here on
trees laid out as cgroupfs is; the real kernel's are read in
tests/integration/test_runtime_usage.py)."""

from __future__ import annotations

from pathlib import Path

from corral.runtime import cgroups


def _files(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def test_v1_reads_each_controller_hierarchy(tmp_path: Path) -> None:
    _files(tmp_path / "cpuacct/corral/sb-x", {"cpuacct.usage": "2500000000\n"})
    _files(
        tmp_path / "memory/corral/sb-x",
        {
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "memory.max_usage_in_bytes": "4096\n",
        },
    )
    _files(tmp_path / "pids/corral/sb-x", {"pids.events": "max 7\n"})
    _files(tmp_path / "unified/corral/sb-x", {"cpu.stat": "usage_usec 1\n"})  # hybrid: v1 wins
    usage = cgroups.usage("corral", "sb-x", tmp_path)
    assert usage is not None
    assert (usage.cpu_seconds, usage.oom_kills, usage.pids_refused) == (2.5, 2, 7)
    assert usage.memory_peak_bytes == 4096
    assert usage.memory_exceeded and usage.pids_exceeded and not usage.cpu_exceeded


def test_v2_reads_the_one_directory(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    _files(
        tmp_path / "corral/sb-x",
        {
            "cpu.stat": "usage_usec 1500000\nuser_usec 1000000\n",
            "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
            "pids.events": "max 0\n",
        },
    )
    usage = cgroups.usage("corral", "sb-x", tmp_path)
    assert usage is not None
    assert (usage.cpu_seconds, usage.oom_kills, usage.pids_refused) == (1.5, 1, 0)
    assert usage.memory_peak_bytes is None  # no memory.peak before Linux 5.19


def test_no_cgroup_is_none_and_links_are_not_followed(tmp_path: Path) -> None:
    assert cgroups.usage("corral", "sb-x", tmp_path) is None
    (tmp_path / "secret").write_text("max 9\n")
    (tmp_path / "pids/corral/sb-x").mkdir(parents=True)
    (tmp_path / "pids/corral/sb-x/pids.events").symlink_to(tmp_path / "secret")
    usage = cgroups.usage("corral", "sb-x", tmp_path)
    assert usage is not None and usage.pids_refused == 0
