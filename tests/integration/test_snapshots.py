"""RuncSnapshots and RuncRuntime's hibernate and resume on real runc: consistent copies
of a running sandbox's disk, forks that match their checkpoint file for file,
hibernation that frees everything but the disk, restores in place, and thawing what a
crash left frozen. Needs root."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.domain import ExecRequest, Limits, SandboxSpec, Template
from corral.errors import Conflict
from corral.runtime import freeze, loopdev, mounts
from corral.runtime.runc import CGROUP_PARENT, RuncRuntime
from corral.runtime.snapshot import DISK, RuncSnapshots
from corral.settings import Settings
from tests.integration.conftest import CreateFn, new_id

pytestmark = pytest.mark.integration

PER_SANDBOX = {"/etc/hostname", "/etc/hosts", "/etc/resolv.conf"}  # rewritten for every fork


@pytest.fixture
def snapshots(runtime: RuncRuntime, settings: Settings) -> RuncSnapshots:
    return RuncSnapshots(runtime, settings)


@pytest.fixture
async def target(settings: Settings) -> AsyncIterator[Path]:
    path = settings.data_dir / "test-checkpoints" / secrets.token_hex(6)
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def sh(runtime: RuncRuntime, sandbox_id: str, script: str) -> str:
    result = await runtime.agent(sandbox_id).exec(ExecRequest("sh", ("-c", script), timeout_s=60))
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def manifest(upper: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry of an upper layer: path -> (mode, uid, gid, sha256 or link target)."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for current, dirs, files in os.walk(upper):
        for name in dirs + files:
            path = Path(current) / name
            st = path.lstat()
            rel = "/" + str(path.relative_to(upper))
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            else:
                digest = ""
            found[rel] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return found


def mounted_manifest(image: Path, where: Path) -> dict[str, tuple[int, int, int, str]]:
    """The manifest of the upper layer inside a checkpoint's disk image (mounted
    read-only for the look)."""
    where.mkdir()
    device, fd = loopdev.attach(image)
    try:
        mounts.mount(device, where, "ext4", mounts.MS_RDONLY)
    finally:
        os.close(fd)
    try:
        return manifest(where / "upper")
    finally:
        mounts.umount(where)


async def test_fork_matches_its_checkpoint_file_for_file_and_stays_separate(
    runtime: RuncRuntime, snapshots: RuncSnapshots, sandboxes: CreateFn, base_template: Template, target: Path
) -> None:
    parent = await sandboxes()
    await sh(
        runtime,
        parent,
        "mkdir -p /data/deep/er && head -c 10485760 /dev/urandom > /data/big.bin && "
        "for i in $(seq 1 200); do echo $i > /data/deep/er/f$i; done && "
        "ln -s big.bin /data/link && chmod 640 /data/deep/er/f7 && chown 1000:1000 /data/deep/er/f8 && "
        "rm /etc/issue",  # a whiteout
    )
    size = await snapshots.snapshot(parent, target)
    assert size >= 10 * 1024 * 1024
    await sh(runtime, parent, "echo later > /data/after.txt && echo changed > /data/deep/er/f1")
    fork = new_id()
    try:
        await snapshots.fork(fork, target)
        with pytest.raises(Conflict):
            await snapshots.fork(fork, target)
        await runtime.resume(SandboxSpec(fork, base_template, Limits()), forked=True)
        expected = mounted_manifest(target / DISK, target / "look")
        got = manifest(runtime.paths(fork).upper)
        for path in PER_SANDBOX:
            expected.pop(path, None), got.pop(path, None)
        assert got == expected and "/data/big.bin" in got and "/etc/issue" in got
        inside = await sh(
            runtime,
            fork,
            "sha256sum /data/big.bin; cat /data/deep/er/f1; hostname; ls /etc/issue 2>&1 || true",
        )
        assert inside.split()[0] == expected["/data/big.bin"][3]
        assert "\n1\n" in inside and fork in inside and "No such file" in inside
        assert "after.txt" not in await sh(runtime, fork, "ls /data")
        await sh(runtime, fork, "echo fork > /data/fork-only")
        assert "fork-only" not in await sh(runtime, parent, "ls /data")
    finally:
        await runtime.destroy(fork)


async def test_hibernate_frees_all_but_the_disk_and_wake_restarts_on_it(
    runtime: RuncRuntime, snapshots: RuncSnapshots, sandboxes: CreateFn, base_template: Template, target: Path
) -> None:
    sid = await sandboxes(memory_mb=256)
    paths = runtime.paths(sid)
    await sh(runtime, sid, "echo kept > /root/f && (sleep 1000 &)")
    size = await runtime.hibernate(sid)
    assert size > 0 and paths.disk_image.exists()
    assert mounts.under(paths.dir) == []
    assert not any(b == str(paths.disk_image) for b in loopdev.backing_files().values())
    assert await runtime.init_pid(sid) is None
    assert not (Path("/sys/fs/cgroup/memory") / CGROUP_PARENT / sid).exists()
    assert await runtime.hibernate(sid) == size  # idempotent
    assert await snapshots.snapshot(sid, target) > 0  # a hibernated disk is copied as it lies
    await runtime.resume(SandboxSpec(sid, base_template, Limits(memory_mb=256)))
    assert await sh(runtime, sid, "cat /root/f; pgrep -c sleep || true") == "kept\n0\n"


async def test_restore_swaps_the_disk_and_restarts_the_processes(
    runtime: RuncRuntime, snapshots: RuncSnapshots, sandboxes: CreateFn, base_template: Template, target: Path
) -> None:
    sid = await sandboxes()
    await sh(runtime, sid, "echo v1 > /root/f")
    await snapshots.snapshot(sid, target)
    await sh(runtime, sid, "echo v2 > /root/f && echo new > /root/g && (sleep 1000 &)")
    with pytest.raises(Conflict):  # only a stopped sandbox's disk is swapped
        await snapshots.restore(sid, target)
    await runtime.hibernate(sid)
    await snapshots.restore(sid, target)
    await runtime.resume(SandboxSpec(sid, base_template, Limits()))
    assert await sh(runtime, sid, "cat /root/f; ls /root; pgrep -c sleep || true") == "v1\nf\n0\n"
    assert not (runtime.paths(sid).dir / f"{DISK}.restore").exists()


async def test_recover_thaws_a_sandbox_a_crash_left_frozen(
    runtime: RuncRuntime, snapshots: RuncSnapshots, sandboxes: CreateFn
) -> None:
    sid = await sandboxes()
    paths = runtime.paths(sid)
    assert freeze.freeze_cgroup(CGROUP_PARENT, sid) and freeze.freeze_fs(paths.disk)
    state = Path("/sys/fs/cgroup/freezer") / CGROUP_PARENT / sid / "freezer.state"
    assert state.read_text().strip() == "FROZEN"
    await snapshots.recover(sid)
    assert state.read_text().strip() == "THAWED"
    assert await sh(runtime, sid, "echo writable > /root/w && cat /root/w") == "writable\n"
    await snapshots.recover(sid)  # idempotent
