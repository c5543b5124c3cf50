"""The launch namespace (runtime/launchns.py) with real mounts, and runc started from
it by the runtime: what runc's process sees, what the host keeps.

Needs root. Every mount a test makes is a small tmpfs under its own tmp dir, removed at
the end; the namespaces it enters are its threads' own and end with them.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from corral.dedicated import on_own_thread
from corral.domain import ExecRequest, Limits, SandboxSpec, Template
from corral.runtime import mounts
from corral.runtime.launchns import LaunchNamespace, kept
from corral.runtime.layout import SandboxPaths
from corral.runtime.runc import RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import new_id

pytestmark = pytest.mark.integration


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``tmpfs("a/b")`` mounts a small tmpfs at tmp_path/a/b (made first); all are
    unmounted at the end."""
    made: list[Path] = []

    def mount(relative: str) -> Path:
        target = tmp_path / relative
        target.mkdir(parents=True, exist_ok=True)
        mounts.mount("tmpfs", target, "tmpfs", 0, "size=64k")
        made.append(target)
        return target

    yield mount
    for target in reversed(made):
        mounts.umount(target)


def thread_mounts() -> list[str]:
    return [entry.path for entry in mounts.table("/proc/thread-self/mountinfo")]


def test_what_the_namespace_keeps() -> None:
    keep = ["/var/lib/corral", "/run/corral/runc"]
    for point in (
        "/",
        "/proc",
        "/proc/sys/fs/binfmt_misc",
        "/sys/fs/cgroup/memory",
        "/dev/pts",
        "/var",
        "/run",
    ):
        assert kept(point, keep), point
    for point in (
        "/run/netns",
        "/run/netns/corral-sb-1",
        "/var/lib/corral/sandboxes/sb-1/disk",
        "/mnt",
        "/devices",
    ):
        assert not kept(point, keep), point


async def test_a_start_sees_only_the_system_its_paths_and_what_it_carries(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    other = tmpfs("data/sandboxes/sb-other/disk")  # another sandbox's disk, mounted before the build
    (tmp_path / "data/sandboxes/sb-new").mkdir(parents=True)
    launch = LaunchNamespace([tmp_path / "data"])
    bare = await on_own_thread(lambda: (launch.enter([], []), thread_mounts())[1])  # built now
    late = tmpfs("data/sandboxes/sb-late/disk")  # and one mounted after it
    root = tmpfs("data/sandboxes/sb-new/rootfs")
    (root / "marker").write_text("carried")
    host_before = mounts.table()

    def start() -> tuple[bool, list[str], str]:
        entered = launch.enter([root], [tmp_path / "data/sandboxes/sb-new"])
        return entered, thread_mounts(), (root / "marker").read_text()

    entered, seen, marker = await on_own_thread(start)
    assert entered and launch.built
    assert str(root) in seen and marker == "carried"
    assert str(other) not in seen and str(late) not in seen
    assert all(kept(point, [str(tmp_path / "data")]) or point == str(root) for point in seen)
    assert len(seen) < len(host_before)
    # the host's namespace is as it was, and the start's copy went with its thread
    assert mounts.table() == host_before
    assert [point for point in seen if point != str(root)] == bare
    assert (await on_own_thread(lambda: (launch.enter([], []), thread_mounts())[1])) == bare


async def test_a_mount_the_namespace_lacks_is_taken_in_by_building_it_again(
    tmp_path: Path, tmpfs: Callable[[str], Path]
) -> None:
    (tmp_path / "data").mkdir()
    launch = LaunchNamespace([tmp_path / "data"])
    assert await on_own_thread(lambda: launch.enter([], [tmp_path / "data"]))
    # a mount made on the host afterwards, which runc's paths now lie on
    state = tmpfs("state")
    (state / "runc").mkdir()

    def start() -> tuple[bool, bool]:
        return launch.enter([], [state / "runc"]), (state / "runc").is_dir()

    assert await on_own_thread(start) == (True, True)


async def test_a_mount_that_cannot_be_carried_fails_the_start(tmp_path: Path) -> None:
    launch = LaunchNamespace([tmp_path])
    missing = tmp_path / "not-there"
    with pytest.raises(OSError):
        await on_own_thread(lambda: launch.enter([missing], []))


@pytest.fixture
def recording_runc(tmp_path: Path) -> tuple[Path, Path]:
    """An OCI runtime program that records the mount table runc's ``run`` starts from,
    then runs runc."""
    records = tmp_path / "records"
    records.mkdir()
    program = tmp_path / "recording-runc"
    program.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" run "*) cat /proc/self/mountinfo > {records}/run-$$ ;; esac\n'
        'exec runc "$@"\n'
    )
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program, records


async def test_runc_starts_a_sandbox_without_the_other_sandboxes_mounts(
    settings: Settings, base_template: Template, recording_runc: tuple[Path, Path]
) -> None:
    program, records = recording_runc
    runtime = RuncRuntime(settings.model_copy(update={"oci_runtime": str(program)}))
    first, second = new_id(), new_id()
    try:
        await runtime.create(SandboxSpec(first, base_template, Limits(), {}))
        await runtime.create(SandboxSpec(second, base_template, Limits(), {}))
        result = await runtime.agent(second).exec(
            ExecRequest("sh", ("-c", "echo hi > /root/x && cat /root/x"))
        )
        assert result.exit_code == 0 and result.stdout == b"hi\n"
        first_paths = SandboxPaths.of(settings.sandboxes_dir, first)
        second_paths = SandboxPaths.of(settings.sandboxes_dir, second)
        assert os.path.ismount(first_paths.disk) and os.path.ismount(second_paths.disk)  # the host keeps both
        runs = sorted(records.iterdir(), key=lambda path: path.stat().st_mtime)
        assert len(runs) == 2
        seen = [line.split()[4] for line in runs[1].read_text().splitlines()]
        assert str(second_paths.rootfs) in seen  # carried
        assert not any(point.startswith(str(first_paths.dir)) for point in seen)  # the first's disk is not
        assert len(seen) < len(mounts.table())
    finally:
        await asyncio.gather(runtime.destroy(first), runtime.destroy(second))
