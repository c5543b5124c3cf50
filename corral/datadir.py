"""The data dir: one corral server per data dir, and none of it readable by others.

``claim(data_dir)`` takes an exclusive ``flock`` on ``<data dir>/serve.lock`` (writing
the server's pid in it) or raises ``Unavailable`` naming the process that holds it. Two
servers on one data dir would each reconcile the other's sandboxes, standbys and ready
namespaces as their own; the second used to fail only by chance (the DNS port was
taken) and with a message that did not say why. The kernel drops the lock when the
process dies, even by ``kill -9``, so a crash never leaves a stale claim; the file is
opened close-on-exec, so no sandbox or child inherits it. Admin commands (``corral
keys``, ``corral killswitch`` ...) use the store without claiming: they run beside a
server. On a filesystem without ``flock`` the claim is skipped with a warning.

``secure(data_dir)`` (at every start, before anything is read or written there) makes
the data dir and what corral keeps in it private to root, fixing what an older corral
or the operator left readable: the store (``corral.db``, its ``-wal`` and ``-shm``:
``corral.store.database``), ``jwt-secret``, ``admin-key``, ``serve.lock`` are 0600;
``checkpoints/``, ``disks/``, ``builder/``, ``templates/`` 0700. Only what a sandbox's
own root (host uid and gid ``uid_base``, in its user namespace) must pass through while
runc sets it up is searchable, by that group alone and never listable: the data dir
itself and ``sandboxes/`` are root's, of group ``uid_base``, 0710, and so is each
sandbox's dir (``corral.runtime.bundle``), so no other host user reaches a sandbox's
disk or root; ``agent/`` (the compiled agent program, nothing secret) is 0711.
Links are never followed: an entry that is not the expected kind is left alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
from pathlib import Path

from corral.errors import Unavailable

log = logging.getLogger("corral")
LOCK_FILE = "serve.lock"
SEARCHED = 0o710  # root's, searchable by the sandboxes' root group (uid_base) alone
MODES = {
    "corral.db": 0o600,
    "corral.db-wal": 0o600,
    "corral.db-shm": 0o600,
    "jwt-secret": 0o600,
    "admin-key": 0o600,
    LOCK_FILE: 0o600,
    "checkpoints": 0o700,
    "disks": 0o700,
    "builder": 0o700,
    "templates": 0o700,
    "sandboxes": SEARCHED,
    "agent": 0o711,
}


class Claim:
    """A held claim; ``release`` at shutdown (or let the process end)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def secure(data_dir: Path, sandbox_group: int) -> None:
    """Make (or fix) the data dir and its known entries as the module docstring says;
    ``sandbox_group`` is the host gid of the sandboxes' root (``uid_base``)."""
    data_dir.mkdir(mode=SEARCHED, parents=True, exist_ok=True)
    for path, mode in ((data_dir, SEARCHED), *((data_dir / n, m) for n, m in MODES.items())):
        with contextlib.suppress(FileNotFoundError):
            found = path.lstat()
            is_dir = mode & 0o100 != 0
            if not (stat.S_ISDIR if is_dir else stat.S_ISREG)(found.st_mode):
                continue
            group = sandbox_group if mode == SEARCHED else found.st_gid
            if found.st_gid != group:
                os.chown(path, -1, group, follow_symlinks=False)
            if stat.S_IMODE(found.st_mode) != mode:
                os.chmod(path, mode)
                log.info("%s was %o, now %o", path, stat.S_IMODE(found.st_mode), mode)


def claim(data_dir: Path) -> Claim:
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Unavailable(
            f"another corral server (pid {holder}) is serving from {data_dir}: stop it first, "
            "or give this one a data dir of its own (CORRAL_DATA_DIR or --data-dir)"
        ) from None
    except OSError as exc:
        os.close(fd)
        log.warning("cannot lock %s (%s): not checking for another server on this data dir", path, exc)
        return Claim(None)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return Claim(fd)
