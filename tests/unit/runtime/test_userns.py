"""Owner uids of sandboxes' user namespaces (corral/runtime/userns.py): one per sandbox
dir, kept across restarts, never two alike among the dirs of one sandboxes dir."""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import struct
from pathlib import Path

import pytest

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


def _gone(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie its parent has yet to reap)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:  # gone: no such file, or ESRCH from a read as it is let go
        return True


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
        status = Path(f"/proc/{pid}/status").read_text()
        assert f"Uid:\t{BASE + 7}\t{BASE + 7}\t{BASE + 7}\t{BASE + 7}" in status
        assert f"Gid:\t{BASE + 7}\t{BASE + 7}\t{BASE + 7}\t{BASE + 7}" in status
        assert status.split("Groups:")[1].split("\n")[0].strip() == ""
        for kind in ("CapPrm", "CapEff", "CapInh"):
            assert f"{kind}:\t0000000000000000" in status
        # it keeps nothing of the server's or the forker's: only its two pipes
        assert sorted(os.listdir(f"/proc/{pid}/fd")) == ["0", "1"]
    finally:
        await made.close()
    assert made.ended and _gone(pid)
    await made.close()  # idempotent


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (forks holders as other uids)")
async def test_a_holder_that_fails_says_why_and_ends() -> None:
    """Root is never a namespace's owner: the holder refuses it, and says so."""
    with pytest.raises(RuntimeFailure, match=r"owner uid 0 refused"):
        await UserNamespace.make(owner=0, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    made = await UserNamespace.make(owner=BASE + 9, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    await made.close()  # the forker goes on serving
    assert made.ended


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (forks holders as other uids)")
async def test_a_forker_that_died_is_started_again() -> None:
    first = await UserNamespace.make(owner=BASE + 10, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    await first.close()
    forker = userns._forker
    old = forker._pid
    os.kill(old, signal.SIGKILL)
    second = await UserNamespace.make(owner=BASE + 11, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    try:
        assert forker._pid != old
        assert Path(f"/proc/{second.pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
    finally:
        await second.close()
    with pytest.raises(ChildProcessError):  # the dead forker was reaped
        os.waitpid(old, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG


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


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (forks holders as other uids)")
async def test_a_request_cancelled_before_its_answer_leaves_the_next_one_its_own() -> None:
    """A cancel between the request and its answer still reads the answer: left on the
    channel, the next request would take it for its own (a holder that is gone)."""
    warm = await UserNamespace.make(owner=BASE + 12, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    await warm.close()  # the forker runs
    hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    try:
        request = asyncio.ensure_future(userns._forker.fork(BASE + 13, 4096, hold_r, out_w))
        for _ in range(3):  # sent, and waiting for the answer
            await asyncio.sleep(0)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    finally:
        for fd in (hold_r, hold_w, out_r, out_w):
            os.close(fd)  # its holder, if forked, sees the end of its input and ends
    made = await UserNamespace.make(owner=BASE + 14, uid_base=100000, uid_count=65536, msgqueue_bytes=4096)
    try:
        assert Path(f"/proc/{made.pid}/uid_map").read_text().split() == ["0", "100000", "65536"]
        status = Path(f"/proc/{made.pid}/status").read_text()
        assert f"Uid:\t{BASE + 14}\t" in status  # its own holder, not the cancelled request's
    finally:
        await made.close()
