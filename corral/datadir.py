"""One corral server per data dir.

``claim(data_dir)`` takes an exclusive ``flock`` on ``<data dir>/serve.lock`` (writing
the server's pid in it) or raises ``Unavailable`` naming the process that holds it. Two
servers on one data dir would each reconcile the other's sandboxes, standbys and ready
namespaces as their own; the second used to fail only by chance (the DNS port was
taken) and with a message that did not say why. The kernel drops the lock when the
process dies, even by ``kill -9``, so a crash never leaves a stale claim; the file is
opened close-on-exec, so no sandbox or child inherits it. Admin commands (``corral
keys``, ``corral killswitch`` ...) use the store without claiming: they run beside a
server. On a filesystem without ``flock`` the claim is skipped with a warning.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from corral.errors import Unavailable

log = logging.getLogger("corral")
LOCK_FILE = "serve.lock"


class Claim:
    """A held claim; ``release`` at shutdown (or let the process end)."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
