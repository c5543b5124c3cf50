"""Per-sandbox disks: a sparse ext4 image on a loop device, holding the overlay's upper
and work dirs, so a sandbox that fills its disk gets ENOSPC and nobody else notices.

Why this and not quotas: this kernel has neither XFS quota nor the ext4 quota formats,
so project quotas are out; a loop-backed filesystem per sandbox is also the strongest
form (its own inodes, its own free space, no shared accounting).

Making one fast: ``mkfs.ext4`` runs once per disk size, into a cache
(``<data>/disks/ext4-<MiB>m-v<N>.img``, built atomically); each sandbox gets a sparse
copy of it (only the ~1-2 MiB of metadata blocks are written; lazy inode tables, no
journal: the disk is scratch space that dies with its sandbox). The copy is bound to a
loop device with direct I/O and autoclear and mounted; unmounting it detaches the loop
device. The images are sparse, so the data dir's filesystem is thinly provisioned, as
with any thin pool: what a node may promise in all is bounded by
``max_promised_disk_mb`` (``corral.runtime.capacity``), and the disk is mounted with
``discard``, so blocks freed inside a sandbox become holes in its image again (the
loop device punches them) and the space goes back to the host at once.

A disk larger than its sandbox's limit (a standby's claimed with a smaller diskMB than
it stood by with, changed in place): the rest of it is its filesystem's reserve
(``/sys/fs/ext4/<device>/reserved_clusters``, blocks no write gets, root's neither, so
a full disk is ENOSPC as on a disk of that size). The reserve is the kernel's, not on
the disk: every mount sets it again (``mount``'s ``limit_mb``), and ``limit`` changes it
on a mounted disk. (Growing the filesystem online instead needs CAP_SYS_RESOURCE, which
corral's host may not have.)
"""

from __future__ import annotations

import asyncio
import errno
import os
import secrets
from pathlib import Path

from corral.runtime import loopdev, mounts
from corral.runtime.blocking import finish

FORMAT_VERSION = 1
MKFS_ARGS = (
    "-q",
    "-F",
    "-t",
    "ext4",
    "-b",
    "4096",
    "-i",
    "8192",
    "-m",
    "0",
    "-L",
    "corral",
    "-O",
    "^has_journal",
    "-E",
    "lazy_itable_init=1,nodiscard",
)
MOUNT_OPTIONS = "noinit_itable,discard"


class DiskImages:
    """Creates, mounts and unmounts sandbox disk images; keeps the pre-formatted cache."""

    def __init__(self, cache_dir: Path, *, mkfs: str = "mkfs.ext4") -> None:
        self._cache = cache_dir
        self._mkfs = mkfs
        self._locks: dict[int, asyncio.Lock] = {}

    async def make(self, image: Path, target: Path, size_mb: int, limit_mb: int | None = None) -> None:
        """Write a fresh, empty ext4 image of ``size_mb`` MiB at ``image`` (which must not
        exist) and ``mount`` it at ``target``, in one turn of a thread. Not all or nothing:
        on failure the image may exist (the caller removes it with its dir). Raises
        OSError."""
        await finish(_copy_and_mount, await self._formatted(size_mb), image, target, limit_mb)

    async def mount(self, image: Path, target: Path, limit_mb: int | None = None) -> None:
        """Mount ``image`` at ``target`` (an existing dir), with ``limit_mb`` MiB of it
        usable when the image is larger (``limit``). All or nothing: on failure no loop
        device stays bound. Raises OSError."""
        await finish(_mount, image, target, limit_mb)

    async def limit(self, target: Path, size_mb: int) -> None:
        """Let the files on the disk mounted at ``target`` take ``size_mb`` MiB of it in
        all (what they hold already included), the rest being its reserve; never less
        reserve than the kernel's own (at most 16 MiB). Raises OSError."""
        await asyncio.to_thread(_limit, target, size_mb)

    async def unmount(self, target: Path) -> None:
        """Unmount whatever is mounted at ``target``; idempotent."""
        await asyncio.to_thread(mounts.umount, target)

    async def _formatted(self, size_mb: int) -> Path:
        if size_mb < 16:
            raise ValueError("a disk needs at least 16 MiB")
        path = self._cache / f"ext4-{size_mb}m-v{FORMAT_VERSION}.img"
        if path.exists():
            return path
        lock = self._locks.setdefault(size_mb, asyncio.Lock())
        async with lock:
            if path.exists():
                return path
            self._cache.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
            try:
                await asyncio.to_thread(_create_sparse, tmp, size_mb * 1024 * 1024)
                proc = await asyncio.create_subprocess_exec(
                    self._mkfs,
                    *MKFS_ARGS,
                    str(tmp),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                out, _ = await proc.communicate()
                if proc.returncode != 0:
                    raise OSError(errno.EIO, f"mkfs.ext4 failed: {out.decode(errors='replace')[-500:]}")
                os.replace(tmp, path)  # another process may have raced us: same content
            finally:
                tmp.unlink(missing_ok=True)
        return path


def _create_sparse(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def sparse_copy(source: Path, target: Path) -> None:
    """Copy only the data extents of ``source``; holes stay holes."""
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(dst, size)
            offset = 0
            while offset < size:
                try:
                    start = os.lseek(src, offset, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:  # only a hole is left
                        break
                    raise
                end = os.lseek(src, start, os.SEEK_HOLE)
                position = start
                while position < end:
                    copied = os.copy_file_range(src, dst, end - position, position, position)
                    if copied == 0:
                        raise OSError(errno.EIO, "short copy", str(source))
                    position += copied
                offset = end
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_and_mount(formatted: Path, image: Path, target: Path, limit_mb: int | None) -> None:
    sparse_copy(formatted, image)
    _mount(image, target, limit_mb)


def _mount(image: Path, target: Path, limit_mb: int | None) -> None:
    device, fd = loopdev.attach(image)
    try:
        mounts.mount(device, target, "ext4", 0, MOUNT_OPTIONS)
    except BaseException:
        os.close(fd)
        loopdev.detach(device)
        raise
    os.close(fd)  # the mount holds the device now; autoclear frees it on unmount
    if limit_mb is not None and limit_mb * MIB < os.stat(image).st_size:
        try:
            _limit(target, limit_mb)
        except BaseException:
            mounts.umount(target)
            raise


MIB = 1024 * 1024
KERNEL_RESERVE = 4096  # clusters at most: ext4's own reserve is 2% of them, at most this


def _limit(target: Path, size_mb: int) -> None:
    fs = os.statvfs(target)
    blocks, wanted = fs.f_blocks, size_mb * MIB // fs.f_frsize
    reserve = max(min(blocks // 50, KERNEL_RESERVE), blocks - wanted)
    (Path("/sys/fs/ext4") / _device_name(os.stat(target).st_dev) / "reserved_clusters").write_text(
        f"{reserve}\n"
    )


def _device_name(dev: int) -> str:
    """The kernel's name of the block device ``dev`` (``loop7``)."""
    uevent = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent").read_text()
    for line in uevent.splitlines():
        if line.startswith("DEVNAME="):
            return line.removeprefix("DEVNAME=")
    raise OSError(errno.ENODEV, "no such block device", f"{os.major(dev)}:{os.minor(dev)}")
