"""Owner uids of sandboxes' user namespaces (corral/runtime/userns.py): one per sandbox
dir, kept across restarts, never two alike among the dirs of one sandboxes dir."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from corral import spawn
from corral.errors import RuntimeFailure
from corral.runtime import userns
from corral.runtime.layout import SandboxPaths
from corral.runtime.userns import OWNER_FILE, UserNamespace, owner_uid, release
from corral.settings import Settings

BASE = 1 << 30
NS_GET_OWNER_UID = 0xB704  # _IO(0xb7, 0x4)


def sandbox(tmp_path: Path, name: str) -> SandboxPaths:
    paths = SandboxPaths.of(tmp_path, name)
    paths.dir.mkdir()
    return paths


def test_an_owner_is_recorded_and_kept(tmp_path: Path) -> None:
    paths = sandbox(tmp_path, "sb-aaaaaaaa")
    owner = owner_uid(paths, BASE, 1 << 20)
    assert BASE <= owner < BASE + (1 << 20)
    assert (paths.dir / OWNER_FILE).read_text() == f"{owner}\n"
    assert owner_uid(paths, BASE, 1 << 20) == owner


def test_no_two_sandboxes_share_an_owner(tmp_path: Path) -> None:
    owners = [owner_uid(sandbox(tmp_path, f"sb-{n:08d}"), BASE, 4) for n in range(4)]
    assert sorted(owners) == [BASE, BASE + 1, BASE + 2, BASE + 3]
    with pytest.raises(RuntimeFailure, match="owner uids are taken"):
        owner_uid(sandbox(tmp_path, "sb-99999999"), BASE, 4)


def test_an_owner_outside_the_range_is_replaced(tmp_path: Path) -> None:
    paths = sandbox(tmp_path, "sb-bbbbbbbb")
    (paths.dir / OWNER_FILE).write_text("5\n")
    assert owner_uid(paths, BASE, 8) in range(BASE, BASE + 8)


def test_the_owner_range_must_not_overlap_the_sandboxes_ids() -> None:
    with pytest.raises(ValueError, match="must not overlap"):
        Settings(uid_base=100000, uid_count=65536, userns_owner_base=120000)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="below 4294967295"):
        Settings(userns_owner_base=(1 << 32) - 10, userns_owner_count=100)  # type: ignore[call-arg]
    assert Settings().userns_owner_base == 1 << 30  # type: ignore[call-arg]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (writes id maps)")
async def test_a_namespace_is_owned_by_its_owner_and_mapped() -> None:
    made = await UserNamespace.make(owner=BASE + 7, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    try:
        fd = os.open(made.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            owner = struct.unpack("I", fcntl.ioctl(fd, NS_GET_OWNER_UID, b"\0" * 4))[0]
        finally:
            os.close(fd)
        assert owner == BASE + 7
        pid = made.pid
        assert Path(f"/proc/{pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
        assert Path(f"/proc/{pid}/gid_map").read_text().split() == ["0", "100000", "65536"]
        assert "Max msgqueue size         4096" in Path(f"/proc/{pid}/limits").read_text()
    finally:
        await made.close()
    assert made.returncode == 0
    await made.close()  # idempotent


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (setpriv)")
async def test_a_chain_that_fails_says_why_and_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    argv = userns._helper_argv(BASE + 8, 4096)
    broken = [*argv[: argv.index("unshare")], "unshare", "--no-such-option", "--", "cat"]
    monkeypatch.setattr(userns, "_helper_argv", lambda owner, msgqueue: broken)
    started: list[int] = []
    start = spawn.start

    def recorded(*args: Any, **kwargs: Any) -> int:
        started.append(start(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(spawn, "start", recorded)
    with pytest.raises(RuntimeFailure, match="no-such-option"):
        await UserNamespace.make(owner=BASE + 8, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    [helper] = started
    with pytest.raises(ChildProcessError):  # reaped: no longer a child of ours (others may be)
        os.waitpid(helper, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG


def test_an_owner_is_found_in_constant_reads_however_many_sandboxes_hold_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(300):
        owner_uid(sandbox(tmp_path, f"sb-{n:08d}"), BASE, 1 << 20)
    reads: list[Path] = []
    real = userns._read_owner

    def counted(directory: Path) -> int | None:
        reads.append(directory)
        return real(directory)

    monkeypatch.setattr(userns, "_read_owner", counted)
    owner = owner_uid(sandbox(tmp_path, "sb-new00000"), BASE, 1 << 20)
    assert len(reads) <= 2  # its own dir (and a holder's, on a hash collision): not 300
    assert owner not in {int((tmp_path / f"sb-{n:08d}" / OWNER_FILE).read_text()) for n in range(300)}


def test_a_released_owner_is_free_again_and_a_stale_claim_is_taken_over(tmp_path: Path) -> None:
    first = sandbox(tmp_path, "sb-aaaaaaaa")
    assert owner_uid(first, BASE, 1) == BASE
    with pytest.raises(RuntimeFailure, match="owner uids are taken"):
        owner_uid(sandbox(tmp_path, "sb-bbbbbbbb"), BASE, 1)
    release(first)
    assert owner_uid(sandbox(tmp_path, "sb-cccccccc"), BASE, 1) == BASE
    (tmp_path / "sb-cccccccc" / OWNER_FILE).unlink()  # its dir no longer records it: a crash
    assert owner_uid(sandbox(tmp_path, "sb-dddddddd"), BASE, 1) == BASE


def test_dirs_made_before_the_registry_keep_their_owners(tmp_path: Path) -> None:
    old = sandbox(tmp_path, "sb-oldoldold")
    (old.dir / OWNER_FILE).write_text(f"{BASE}\n")
    assert owner_uid(sandbox(tmp_path, "sb-newnewnew"), BASE, 2) == BASE + 1
