"""Mount and unmount with the mount(2) family, and read /proc/self/mountinfo.

Blocking calls (each takes well under a millisecond to a few milliseconds): callers on
the event loop run them through ``asyncio.to_thread``; ``mount_sysfs_of_netns`` and
``resize_shm``, which enter a namespace on a thread of their own, are awaitable. Errors are ``OSError`` with the
errno set; the runtime translates them at its boundary.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from corral.dedicated import on_own_thread

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MNT_DETACH = 0x2
UMOUNT_NOFOLLOW = 0x8

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    path: str
    fstype: str
    source: str
    options: str  # per-superblock options, e.g. overlay's lowerdir=...


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", path)


def mount(source: str, target: str | Path, fstype: str, flags: int = 0, data: str = "") -> None:
    """mount(2). Raises OSError."""
    target = str(target)
    result = _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None)
    _check(result, f"mount {fstype}", target)


def umount(target: str | Path) -> None:
    """Unmount ``target``; when it is busy, detach it lazily instead (the kernel frees it
    once the last user lets go). Not mounted (EINVAL) and absent (ENOENT) are no-ops."""
    raw = str(target).encode()
    if _libc.umount2(raw, UMOUNT_NOFOLLOW) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return
    if code != errno.EBUSY:
        raise OSError(code, f"umount: {os.strerror(code)}", str(target))
    _check(_libc.umount2(raw, MNT_DETACH | UMOUNT_NOFOLLOW), "umount (lazy)", str(target))


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _escape(path: str) -> str:
    """``path`` as mountinfo writes it."""
    return "".join(f"\\{ord(ch):03o}" if ch in " \t\n\\" else ch for ch in path)


def _entries(
    needle: str | None = None, source: str = "/proc/self/mountinfo"
) -> Iterator[tuple[int, MountEntry]]:
    """(mount order, entry) of this process's mount namespace (of the calling thread's
    with ``source`` /proc/thread-self/mountinfo); with ``needle``, only the lines holding
    it are parsed (a host with thousands of sandbox mounts has thousands of lines:
    reading them is cheap, parsing each is not)."""
    with open(source, encoding="utf-8", errors="surrogateescape") as f:
        for index, line in enumerate(f):
            if needle is not None and needle not in line:
                continue
            left, _, right = line.rstrip("\n").partition(" - ")
            fields, tail = left.split(" "), right.split(" ")
            if len(fields) < 5 or len(tail) < 3:
                continue
            yield index, MountEntry(_unescape(fields[4]), tail[0], _unescape(tail[1]), tail[2])


def table(source: str = "/proc/self/mountinfo") -> list[MountEntry]:
    """Every mount of this process's mount namespace (or of the one ``source`` shows),
    in mount order."""
    return [entry for _, entry in _entries(source=source)]


def under(prefix: str | Path) -> list[MountEntry]:
    """Mounts at ``prefix`` or below it, deepest (then most recent) first: the order in
    which they can be unmounted."""
    root = os.path.normpath(str(prefix))
    found = [
        (index, entry)
        for index, entry in _entries(_escape(root))
        if entry.path == root or entry.path.startswith(root + "/")
    ]
    found.sort(key=lambda pair: (pair[1].path.count("/"), pair[0]), reverse=True)
    return [entry for _, entry in found]


def unmount_all(prefix: str | Path, attempts: int = 8) -> None:
    """Unmount everything at or below ``prefix`` (stacked mounts included). Raises
    OSError(EBUSY) if something is still mounted there afterwards."""
    for _ in range(attempts):
        found = under(prefix)
        if not found:
            return
        for entry in found:
            umount(entry.path)
    if under(prefix):
        raise OSError(errno.EBUSY, "mounts remain", str(prefix))


AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_NO_AUTOMOUNT = 0x800
STATX_ATTR_MOUNT_ROOT = 0x2000
_STATX = ctypes.c_char * 256  # struct statx; stx_attributes at 8, stx_attributes_mask at 56
_statx = getattr(_libc, "statx", None)  # None: a libc without statx(2)'s wrapper
if _statx is not None:
    _statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p]


def is_mount_root(path: str | Path) -> bool | None:
    """Whether ``path`` (not followed if a link) is the root of a mount, bind mounts
    included, from ``statx``'s STATX_ATTR_MOUNT_ROOT: one system call, where the mount
    table of a node of a thousand sandboxes is thousands of lines. False for a missing
    path; None when the kernel cannot tell (ask the table then)."""
    if _statx is None:
        return None
    buffer = _STATX()
    flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT
    if _statx(AT_FDCWD, os.fsencode(str(path)), flags, 0, ctypes.byref(buffer)) != 0:
        code = ctypes.get_errno()
        if code in (errno.ENOENT, errno.ENOTDIR):
            return False
        if code == errno.ENOSYS:
            return None
        raise OSError(code, f"statx: {os.strerror(code)}", str(path))
    attributes = int.from_bytes(buffer.raw[8:16], "little")
    known = int.from_bytes(buffer.raw[56:64], "little")
    if not known & STATX_ATTR_MOUNT_ROOT:
        return None
    return bool(attributes & STATX_ATTR_MOUNT_ROOT)


def unmount_points(points: list[Path], attempts: int = 8) -> bool:
    """Unmount each of ``points`` in order (stacked mounts included), without reading
    the mount table: a teardown knows its sandbox's mount points. True when none of
    them is a mount any more; False when the kernel cannot tell (``is_mount_root``:
    unmount by the table then, ``unmount_all``). Raises OSError(EBUSY) if one is
    still mounted afterwards."""
    for point in points:
        for _ in range(attempts):
            mounted = is_mount_root(point)
            if mounted is None:
                return False
            if not mounted:
                break
            umount(point)
        else:
            if is_mount_root(point):
                raise OSError(errno.EBUSY, "still mounted", str(point))
    return True


_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
CLONE_FS = 0x200
CLONE_NEWNS = 0x20000
CLONE_NEWNET = 0x40000000


def unshare(flags: int) -> None:
    """unshare(2) for the calling thread. Raises OSError."""
    _check(_libc.unshare(flags), "unshare", hex(flags))


def setns(fd: int, nstype: int, what: str = "") -> None:
    """setns(2) of the calling thread into the namespace ``fd`` (``what`` it is, for the
    error); a mount namespace needs CLONE_FS unshared first. Raises OSError."""
    _check(_libc.setns(fd, nstype), "setns", what or f"fd {fd}")


def join_netns(netns_path: str) -> None:
    """Move the calling thread into the network namespace at ``netns_path`` (the
    programs it starts then inherit it). Only on a thread of its own that ends with its
    work (``corral.dedicated``): it stays in the namespace. Raises OSError."""
    fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd, CLONE_NEWNET, netns_path)
    finally:
        os.close(fd)


async def mount_sysfs_of_netns(netns_path: str, target: str | Path, *, make_mode: int | None = None) -> None:
    """Mount a read-only sysfs at ``target`` (in our mount namespace) whose network
    part is that of the network namespace at ``netns_path``; with ``make_mode``,
    ``target`` is made first (a new dir of that mode).

    A sandbox that joins a network namespace made by the host (owned by the initial
    user namespace) may not mount sysfs itself; it bind-mounts this one instead, and so
    sees its own interfaces under /sys/class/net rather than the host's. The mount is
    made from a short-lived thread of its own that enters the namespace and then ends
    (``corral.dedicated``), so no thread of ours is ever left in it. As with a blocking
    call's thread, a cancel is raised once the thread is done. Raises OSError.
    """

    def enter_and_mount() -> None:
        if make_mode is not None:
            os.mkdir(target, make_mode)
        join_netns(netns_path)
        mount("sysfs", target, "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)

    await on_own_thread(enter_and_mount)


MS_REMOUNT = 0x20


async def resize_shm(pidfd: int, size_mb: int) -> None:
    """Remount the ``/dev/shm`` tmpfs of the mount namespace of the process ``pidfd``
    (a sandbox's init) with ``size_mb`` MiB, its other options as ``bundle.py`` mounts
    it. The path is resolved in that namespace: there ``/dev`` and ``/dev/shm`` are
    mount points, which a sandbox (no CAP_SYS_ADMIN) can neither move nor replace. Made
    from a short-lived thread of its own that leaves our filesystem context, enters the
    namespace and then ends (``corral.dedicated``; awaitable, like
    ``mount_sysfs_of_netns``). Raises OSError (EBUSY-like when the tmpfs holds more
    than that)."""

    def enter_and_remount() -> None:
        unshare(CLONE_FS)
        setns(pidfd, CLONE_NEWNS, "a sandbox's mount namespace")
        mount("shm", "/dev/shm", "tmpfs", MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={size_mb}m")

    await on_own_thread(enter_and_remount)


# -- propagation, detached mounts (used by launchns.py) -------------------------------

MS_REC = 0x4000
MS_PRIVATE = 0x40000
SYS_OPEN_TREE, SYS_MOVE_MOUNT = 428, 429  # the same number on every architecture (since 5.2)
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
_libc.syscall.restype = ctypes.c_long


def make_private(target: str | Path, *, recursive: bool = False) -> None:
    """Make ``target`` (and with ``recursive`` every mount below it) private: nothing
    mounted or unmounted there propagates to or from a peer. Raises OSError."""
    mount("none", target, "", MS_PRIVATE | (MS_REC if recursive else 0))


def detach(target: str | Path) -> bool:
    """umount2(MNT_DETACH) of ``target`` and everything below it; False if it was not
    a mount (any more) or is gone. Raises OSError for anything else."""
    if _libc.umount2(str(target).encode(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"umount: {os.strerror(code)}", str(target))


def clone_tree(path: str | Path) -> int:
    """open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at ``path`` (not
    what is mounted below it), as an fd that :func:`move_tree` attaches elsewhere,
    even in another mount namespace. The caller closes it. Raises OSError."""
    fd = _libc.syscall(
        ctypes.c_long(SYS_OPEN_TREE),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(str(path))),
        ctypes.c_uint(OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_SYMLINK_NOFOLLOW),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"open_tree: {os.strerror(code)}", str(path))
    return int(fd)


def move_tree(fd: int, target: str | Path) -> None:
    """move_mount(2) of the detached mount ``fd`` onto ``target`` in the calling
    thread's mount namespace. Raises OSError."""
    result = _libc.syscall(
        ctypes.c_long(SYS_MOVE_MOUNT),
        ctypes.c_int(fd),
        ctypes.c_char_p(b""),
        ctypes.c_int(AT_FDCWD),
        ctypes.c_char_p(os.fsencode(str(target))),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"move_mount: {os.strerror(code)}", str(target))
