"""The launch namespace: the mount namespace runc starts containers from, which holds
the host's system mounts and none of its sandboxes'.

A container's mount namespace begins as a copy of the one runc runs in; runc then
reads that table more than once and, after pivot_root, detaches the old root: each of
these walks every mount. In the host's namespace every running sandbox leaves two
mounts (its disk, its network namespace's bind under /run/netns), so at 1,000 live a
start would pay for ~2,000 mounts it never uses (``bench/bench_host_mounts.py``: ~20
ms a start for each 1,000).

So runc starts elsewhere. :class:`LaunchNamespace` is built once, lazily, on the first
start's thread: a private copy of the host's namespace with every mount detached but
the system's (``/`` and everything under /proc, /sys and /dev) and those that the
runtime's own paths (``keep``: the data dir, runc's state dir, the runc binary) lie
on. Each start (:meth:`LaunchNamespace.enter`, on the thread that then starts runc)
takes a private copy of that, a few dozen mounts, and moves into it clones of the
sandbox's own mounts runc needs (its root, its sysfs, its network namespace's bind):
the copy is that thread's alone and goes once the thread and runc have ended, so
there is nothing to undo and a crash leaves nothing. The host's namespace and every
host-side path stay as they were.

Being private, the namespace does not see what is mounted on the host after it was
built. A start checks that the paths runc reads (the sandbox's bundle, runc's state
dir, the agent file) are the same files in its copy as on the host; if they are not,
the namespace is built again, and if they still are not, runc starts from the host's
namespace as before. So does every start if the namespace cannot be built at all.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Collection, Sequence
from pathlib import Path

from corral.runtime import mounts

log = logging.getLogger(__name__)

SYSTEM_TREES = ("/proc", "/sys", "/dev")
THREAD_MOUNTS = "/proc/thread-self/mountinfo"
THREAD_MNT_NS = "/proc/thread-self/ns/mnt"


class LaunchNamespace:
    """One per runtime; :meth:`enter` is called on a thread of its own
    (``corral.dedicated``) that starts a program next and then ends."""

    def __init__(self, keep: Sequence[Path]) -> None:
        self._keep = {os.path.realpath(path) for path in keep}
        self._lock = threading.Lock()
        self._held: list[int] = []  # the namespace's fd, once built; closed when this goes
        self._broken = False  # it cannot be built here: every start goes from the host's
        weakref.finalize(self, _close_all, self._held)

    @property
    def built(self) -> bool:
        return bool(self._held)

    def enter(self, carry: Sequence[Path], same: Sequence[Path]) -> bool:
        """Move the calling thread into a fresh private copy of the launch namespace,
        with a clone of each mount in ``carry`` at its own path, once ``same`` (paths
        runc will read) and the dirs of ``carry`` are the same files there as in the
        host's. True once there; False when the thread stayed in (or went back to) the
        host's namespace, where the program then starts as it would have without this.
        Raises OSError when a mount of ``carry`` cannot be cloned or moved (the thread
        is then in neither: it must start nothing)."""
        if self._broken:
            return False
        wanted = [*same, *(path.parent for path in carry)]
        expected = [_identity(path) for path in wanted]
        clones: list[int] = []
        host = os.open(THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC)
        try:
            clones.extend(mounts.clone_tree(path) for path in carry)
            mounts.unshare(mounts.CLONE_FS)  # a thread sharing its fs context cannot change namespace
            if not self._copy(host):
                return False
            if [_identity(path) for path in wanted] != expected:
                # Built before a mount these lie on, or without it: build it again, keeping it.
                mounts.setns(host, mounts.CLONE_NEWNS)
                self._forget(keeping=wanted)
                if not self._copy(host):
                    return False
                if [_identity(path) for path in wanted] != expected:
                    mounts.setns(host, mounts.CLONE_NEWNS)
                    log.warning("the launch namespace does not show %s as the host does", wanted)
                    return False
            for fd, path in zip(clones, carry, strict=True):
                mounts.move_tree(fd, path)
                mounts.make_private(path)
            return True
        finally:
            os.close(host)
            for fd in clones:
                os.close(fd)

    def _copy(self, host: int) -> bool:
        """Into a private copy of the launch namespace (built first if need be); False,
        still in the host's, if it cannot be built."""
        with self._lock:
            if not self._held:
                try:
                    self._build()
                except OSError as exc:
                    mounts.setns(host, mounts.CLONE_NEWNS)
                    self._broken = True
                    log.warning("no launch namespace (%s): runc starts from the host's mount namespace", exc)
                    return False
            else:
                mounts.setns(self._held[0], mounts.CLONE_NEWNS)
        mounts.unshare(mounts.CLONE_NEWNS)
        return True

    def _build(self) -> None:
        """On the calling thread (fs context unshared): a copy of its namespace, made
        private throughout first (a detach must not propagate to the host's), with
        every mount detached that :func:`kept` does not keep."""
        mounts.unshare(mounts.CLONE_NEWNS)
        mounts.make_private("/", recursive=True)
        for entry in mounts.table(THREAD_MOUNTS):  # parents before children: most go with a parent
            if not kept(entry.path, self._keep):
                mounts.detach(entry.path)
        left = [entry.path for entry in mounts.table(THREAD_MOUNTS) if not kept(entry.path, self._keep)]
        if left:  # e.g. a mount whose point was deleted: harmless, only not free
            log.warning("%d mounts stay in the launch namespace, e.g. %s", len(left), left[0])
        self._held.append(os.open(THREAD_MNT_NS, os.O_RDONLY | os.O_CLOEXEC))

    def _forget(self, keeping: Sequence[Path]) -> None:
        with self._lock:
            self._keep.update(os.path.realpath(path) for path in keeping)
            _close_all(self._held)


def kept(mount_point: str, keep: Collection[str]) -> bool:
    """Whether the launch namespace keeps the mount at ``mount_point``: the root, the
    system's trees and what is below them, and each mount a path of ``keep`` lies on
    (the mount points on its way from the root)."""
    if mount_point == "/" or any(
        mount_point == top or mount_point.startswith(top + "/") for top in SYSTEM_TREES
    ):
        return True
    return any(path == mount_point or path.startswith(mount_point + "/") for path in keep)


def _identity(path: Path) -> tuple[int, int] | None:
    """The file at ``path`` (not followed if a link), as (device, inode)."""
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _close_all(fds: list[int]) -> None:
    while fds:
        os.close(fds.pop())
