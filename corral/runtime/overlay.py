"""A sandbox's root: an overlayfs of its template (lower, read-only) and its own upper
dir, plus the per-sandbox files seeded into that upper dir before it is mounted.

The upper dir's root is owned by the container's root (host ``uid``), so ``/`` inside
belongs to root; ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` are
written into ``upper/etc`` (an ordinary, editable file of the sandbox that counts
against its disk), with ``upper/etc`` given the same owner and mode as the template's
``/etc`` so the merged directory looks untouched.

Mounted ``volatile``: the overlay ignores sync and fsync, which makes package managers
several times faster; the upper layer is scratch space that dies with its sandbox, so
nothing is lost that a crash would not lose anyway. Blocking; run it through
``treework.TreeWork`` (the upper layer is the sandbox's: see ``rootdir.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from corral.runtime import mounts
from corral.runtime.rootdir import NotConfined, RootDir

MOUNT_OPTIONS = "volatile"


def hosts_file(hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        f"127.0.1.1\t{hostname}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
    )


def resolv_conf(nameservers: Sequence[str]) -> str:
    lines = [f"nameserver {server}" for server in nameservers] or ["# no network yet"]
    return "\n".join(lines) + "\n"


def prepare(
    lower: Path, upper: Path, work: Path, *, hostname: str, uid: int, nameservers: Sequence[str]
) -> None:
    """Create ``upper`` (owned like the template root) and ``work`` and seed the
    per-sandbox /etc files. Nothing in ``lower`` is followed (``rootdir.py``):
    NotConfined when the template's /etc is not a real directory. Raises OSError
    (FileNotFoundError when ``lower`` is not a template root)."""
    with RootDir.open(lower) as template:
        root = template.lstat(".")
        etc = template.lstat("etc")
    if not stat.S_ISDIR(etc.st_mode):
        raise NotConfined(errno.ENOTDIR, "the template's /etc is not a directory", f"{lower}/etc")
    upper.mkdir(mode=0o755)
    os.chown(upper, root.st_uid, root.st_gid)
    os.chmod(upper, root.st_mode & 0o7777)
    work.mkdir(mode=0o700)
    with (
        RootDir.open(upper) as layer,
        layer.subdir("etc", create=(etc.st_mode & 0o7777, etc.st_uid, etc.st_gid)) as upper_etc,
    ):
        for name, text in _etc_files(hostname, nameservers).items():
            upper_etc.write(name, text.encode(), mode=0o644, uid=uid, gid=uid)


def refresh(upper: Path, work: Path, *, uid: int, nameservers: Sequence[str], hostname: str | None) -> None:
    """Make a kept upper layer (a hibernated, restored or forked sandbox's) mountable
    again and its per-sandbox files current. The work dir is emptied (a ``volatile``
    overlay refuses a work dir it used before; its contents are the kernel's scratch
    space, worthless once the overlay is unmounted). /etc/resolv.conf is rewritten, and
    with ``hostname`` (a fork: a new sandbox on a copied disk) /etc/hostname and
    /etc/hosts too. The upper layer is the sandbox's own writing, so nothing in it is
    followed or opened (``rootdir.py``): each file is replaced atomically, whatever it
    was (a whiteout, a link, a FIFO); where the sandbox made its /etc something other
    than a directory, or one of the files a directory, that is left as it is. Raises
    OSError."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    files = _etc_files(hostname, nameservers)
    if hostname is None:
        files = {"resolv.conf": files["resolv.conf"]}
    with RootDir.open(upper) as layer:
        try:
            etc = layer.subdir("etc", create=(0o755, uid, uid))
        except NotConfined:
            return
        with etc:
            for name, text in files.items():
                with contextlib.suppress(IsADirectoryError):
                    etc.write(name, text.encode(), mode=0o644, uid=uid, gid=uid)


def _etc_files(hostname: str | None, nameservers: Sequence[str]) -> dict[str, str]:
    name = hostname or "localhost"
    return {"hostname": f"{name}\n", "hosts": hosts_file(name), "resolv.conf": resolv_conf(nameservers)}


def mount(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay at ``target``. Raises OSError."""
    options = f"lowerdir={lower},upperdir={upper},workdir={work},{MOUNT_OPTIONS}"
    mounts.mount("overlay", target, "overlay", mounts.MS_NODEV, options)
