"""A sandbox's root: an overlayfs of its template (lower, read-only) and its own upper
dir, plus the per-sandbox files seeded into that upper dir before it is mounted.

The upper dir's root is owned by the container's root (host ``uid``), so ``/`` inside
belongs to root; ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` are
written into ``upper/etc`` (an ordinary, editable file of the sandbox that counts
against its disk), with ``upper/etc`` given the same owner and mode as the template's
``/etc`` so the merged directory looks untouched.

Mounted ``volatile``: the overlay ignores sync and fsync, which makes package managers
several times faster; the upper layer is scratch space that dies with its sandbox, so
nothing is lost that a crash would not lose anyway. Blocking; use ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from corral.runtime import mounts

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
    """Create ``upper`` (owned by ``uid``, like the template root) and ``work`` and seed
    the per-sandbox /etc files. Raises OSError (FileNotFoundError when ``lower`` is not
    a template root)."""
    root = os.stat(lower)
    etc = os.stat(lower / "etc")
    upper.mkdir(mode=0o755)
    os.chown(upper, root.st_uid, root.st_gid)
    os.chmod(upper, root.st_mode & 0o7777)
    work.mkdir(mode=0o700)
    upper_etc = upper / "etc"
    upper_etc.mkdir()
    os.chown(upper_etc, etc.st_uid, etc.st_gid)
    os.chmod(upper_etc, etc.st_mode & 0o7777)
    files = {
        "hostname": f"{hostname}\n",
        "hosts": hosts_file(hostname),
        "resolv.conf": resolv_conf(nameservers),
    }
    for name, text in files.items():
        fd = os.open(upper_etc / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
            os.fchown(fd, uid, uid)
        finally:
            os.close(fd)


def refresh(upper: Path, work: Path, *, uid: int, nameservers: Sequence[str], hostname: str | None) -> None:
    """Make a kept upper layer (a hibernated, restored or forked sandbox's) mountable
    again and its per-sandbox files current. The work dir is emptied (a ``volatile``
    overlay refuses a work dir it used before; its contents are the kernel's scratch
    space, worthless once the overlay is unmounted). /etc/resolv.conf is rewritten, and
    with ``hostname`` (a fork: a new sandbox on a copied disk) /etc/hostname and
    /etc/hosts too. Each is replaced atomically, whiteouts included. Raises OSError."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    files = {"resolv.conf": resolv_conf(nameservers)}
    if hostname is not None:
        files.update({"hostname": f"{hostname}\n", "hosts": hosts_file(hostname)})
    try:
        etc = os.open(upper / "etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        (upper / "etc").mkdir(mode=0o755)
        os.chown(upper / "etc", uid, uid)
        etc = os.open(upper / "etc", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # the sandbox made its /etc a symlink or a file: never follow it
        return
    try:
        for name, text in files.items():
            temp = f".{name}.corral-new"
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(temp, flags, 0o644, dir_fd=etc)
            try:
                os.write(fd, text.encode())
                os.fchown(fd, uid, uid)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=etc, dst_dir_fd=etc)
    finally:
        os.close(etc)


def mount(lower: Path, upper: Path, work: Path, target: Path) -> None:
    """Mount the overlay at ``target``. Raises OSError."""
    options = f"lowerdir={lower},upperdir={upper},workdir={work},{MOUNT_OPTIONS}"
    mounts.mount("overlay", target, "overlay", mounts.MS_NODEV, options)
