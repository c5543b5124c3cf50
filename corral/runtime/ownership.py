"""Shift a freshly built root filesystem's ownership into a user-namespace range.

runc 1.1 has no idmapped mounts, so a template root is given host ownership in the
mapped range once, at build time (what Docker's userns-remap does): host uid/gid =
``offset`` + the id the file had. Every sandbox of that range then sees the ids the
packages created. Relative ids are kept (``_apt`` stays 42 inside).

What chown(2) would lose is restored: the setuid/setgid bits (the kernel clears them
on chown) and file capabilities (``security.capability``, cleared likewise). Hard
links are shifted once. POSIX ACL entries naming users are not rewritten (minimal
Debian roots have none). Blocking; run it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_CAPS = "security.capability"


@dataclass
class ShiftReport:
    entries: int = 0
    size_bytes: int = 0  # allocated blocks of every inode, hard links counted once


def shift_tree(root: Path, offset: int, count: int) -> ShiftReport:
    """lchown every inode under ``root`` (``root`` included) from id ``i`` to
    ``offset + i``. Raises OSError(ERANGE) for an id at or beyond ``count`` (it would
    not be mapped inside), OSError for anything else that fails."""

    def remap(i: int) -> int | None:
        return offset + i if i < count else None

    return remap_tree(root, remap)


def remap_tree(root: Path, remap: Callable[[int], int | None]) -> ShiftReport:
    """lchown every inode under ``root`` (``root`` included) from id ``i`` to
    ``remap(i)`` (the same function for uids and gids); OSError(ERANGE) where it says
    None, OSError for anything else that fails."""
    report = ShiftReport()
    seen: set[tuple[int, int]] = set()
    _shift(str(root), os.lstat(root), remap, seen, report)
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                _shift(entry.path, st, remap, seen, report)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return report


def _shift(
    path: str,
    st: os.stat_result,
    remap: Callable[[int], int | None],
    seen: set[tuple[int, int]],
    report: ShiftReport,
) -> None:
    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
    uid, gid = remap(st.st_uid), remap(st.st_gid)
    if uid is None or gid is None:
        raise OSError(errno.ERANGE, f"id {st.st_uid}:{st.st_gid} outside the mapped range", path)
    report.entries += 1
    report.size_bytes += st.st_blocks * 512
    caps = None
    if stat.S_ISREG(st.st_mode):
        try:
            caps = os.getxattr(path, _CAPS, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                raise
    os.lchown(path, uid, gid)
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
        os.chmod(path, stat.S_IMODE(st.st_mode))
    if caps is not None:
        os.setxattr(path, _CAPS, caps, follow_symlinks=False)
