"""Shift a freshly built root filesystem's ownership into a user-namespace range.

runc 1.1 has no idmapped mounts, so a template root is given host ownership in the
mapped range once, at build time (what Docker's userns-remap does): host uid/gid =
``offset`` + the id the file had. Every sandbox of that range then sees the ids the
packages created. Relative ids are kept (``_apt`` stays 42 inside).

What chown(2) would lose is restored: the setuid/setgid bits (the kernel clears them
on chown) and file capabilities (``security.capability``, cleared likewise). Hard
links are shifted once. POSIX ACL entries naming users are not rewritten (minimal
Debian roots have none). No link in the tree is ever followed (``remap_tree``).
Blocking; run it through ``treework.TreeWork`` (or a thread).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from corral.runtime.rootdir import RootDir

_CAPS = "security.capability"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ShiftReport:
    entries: int = 0
    size_bytes: int = 0  # allocated blocks of every inode, hard links counted once


def shift_tree(root: Path, offset: int, count: int, *, deadline: float | None = None) -> ShiftReport:
    """lchown every inode under ``root`` (``root`` included) from id ``i`` to
    ``offset + i``. Raises OSError(ERANGE) for an id at or beyond ``count`` (it would
    not be mapped inside), OSError for anything else that fails."""

    def remap(i: int) -> int | None:
        return offset + i if i < count else None

    return remap_tree(root, remap, deadline=deadline)


def remap_tree(
    root: Path, remap: Callable[[int], int | None], *, deadline: float | None = None
) -> ShiftReport:
    """lchown every inode under ``root`` (``root`` included) from id ``i`` to
    ``remap(i)`` (the same function for uids and gids); OSError(ERANGE) where it says
    None, TimeoutError once ``time.monotonic()`` passes ``deadline``, OSError for
    anything else that fails.

    The walk never follows a link: ``root`` is opened ``O_NOFOLLOW``, every directory
    below it from its parent's fd the same way, and each entry is changed relative to
    its directory's fd (``fchownat`` with ``AT_SYMLINK_NOFOLLOW``); a file whose mode
    bits chown cleared is reopened through ``O_PATH | O_NOFOLLOW`` and checked to be the
    inode that was changed before its mode is put back."""
    report = ShiftReport()
    seen: set[tuple[int, int]] = set()
    with RootDir.open(root) as top:
        parent, name = os.path.split(os.path.normpath(root))
        _shift(os.open(parent or ".", _DIR_FLAGS), name, os.fstat(top.fd), remap, seen, report, close=True)
        stack = [os.dup(top.fd)]
    try:
        while stack:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(errno.ETIME, "changing ownership took too long", str(root))
            directory = stack.pop()
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        st = entry.stat(follow_symlinks=False)
                        _shift(directory, entry.name, st, remap, seen, report)
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(os.open(entry.name, _DIR_FLAGS, dir_fd=directory))
            finally:
                os.close(directory)
    finally:
        for fd in stack:
            os.close(fd)
    return report


def _shift(
    directory: int,
    name: str,
    st: os.stat_result,
    remap: Callable[[int], int | None],
    seen: set[tuple[int, int]],
    report: ShiftReport,
    *,
    close: bool = False,
) -> None:
    try:
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in seen:
                return
            seen.add(key)
        uid, gid = remap(st.st_uid), remap(st.st_gid)
        if uid is None or gid is None:
            raise OSError(errno.ERANGE, f"id {st.st_uid}:{st.st_gid} outside the mapped range", name)
        report.entries += 1
        report.size_bytes += st.st_blocks * 512
        caps = None
        inside = f"/proc/self/fd/{directory}/{name}"  # the entry itself, reached through its dir's fd
        if stat.S_ISREG(st.st_mode):
            try:
                caps = os.getxattr(inside, _CAPS, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                    raise
        os.chown(name, uid, gid, dir_fd=directory, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            _restore_mode(directory, name, st)
        if caps is not None:
            os.setxattr(inside, _CAPS, caps, follow_symlinks=False)
    finally:
        if close:
            os.close(directory)


def _restore_mode(directory: int, name: str, st: os.stat_result) -> None:
    """chmod the entry (not a link) back to ``st``'s mode, if it is still that inode."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or stat.S_ISLNK(now.st_mode):
            raise OSError(errno.ESTALE, "replaced while its ownership was changed", name)
        os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)
