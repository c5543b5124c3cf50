"""The user namespace of one sandbox: made by the host, owned by a host uid of its own.

Why. The kernel keeps per-user counts of what the users of a user namespace hold (its
"ucounts": inotify instances and watches, POSIX message-queue bytes, queued signals,
processes, namespaces) and charges each of them, level by level, to
the namespace's *owner* in the parent namespace too, where the parent's limit applies:
``fs.inotify.max_user_instances``/``max_user_watches`` (the initial namespace's per-user
limits) for inotify, and for the rlimit-like counts the owner's rlimit taken when the
namespace was made. When runc (host root) made every sandbox's namespace, every sandbox
was charged to host root: one sandbox's 128 inotify instances or 800 KiB of message
queues left none to other tenants' sandboxes and to every root process of the host.

What. Each sandbox's namespace is made here, by a short-lived helper process that takes
the sandbox's own *owner* uid (``owner_uid``: one per live sandbox, from
``Settings.userns_owner_base``/``userns_owner_count``, a range no host user has), sets
the rlimits the namespace inherits as its bounds, and unshares; the host's root writes
the id maps (container 0.. = host ``uid_base``..) and runc joins the namespace by its
path (``linux.namespaces``), so what the sandbox holds is charged to its owner, bounded
per sandbox, and never to host root. No process ever runs as an owner uid but the helper
until ``runc run`` has joined the namespace (a process of that uid in the initial
namespace would have every capability over the sandbox's namespace).

The owner is recorded in the sandbox dir (``OWNER_FILE``), so a restart (a wake, a
restore) keeps it, and claimed in a registry beside the dirs (``OWNERS_DIR``: a symlink
``<uid> -> <sandbox id>`` each, made with O_EXCL semantics), so a new create finds a free
one in O(1) expected probes whatever the number of sandboxes (it used to read every
dir's file). ``release`` (the teardown) frees it; a claim whose holder's dir no longer
records it (a crash between the two) is taken over.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import hashlib
import os
import resource
import select
import shutil
import signal
import socket
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from corral import spawn
from corral.errors import RuntimeFailure
from corral.runtime.layout import SandboxPaths, valid_id

OWNER_FILE = "userns-owner"
OWNERS_DIR = ".userns-owners"  # in the sandboxes dir: no sandbox id starts with a dot
READY_TIMEOUT_S = 10.0

_READY = b"ready\n"
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
FORKER_PATH = Path(__file__).with_name("userns_forker.py")
_REQUEST = struct.Struct("=II")
_ANSWER = struct.Struct("=ii")
_FD_SIZE = array.array("i").itemsize


class Forker:
    """The server's forker of namespace holders (``userns_forker.py``): one small
    process, started on first use (and again should it have died), that forks a holder
    per namespace. A fork of it costs a fraction of a millisecond; the programs it
    replaced (prlimit, setpriv, unshare, cat) were four execs, ~4-5 ms of CPU a create
    in a burst. It ends with the server (its socket closes)."""

    def __init__(self) -> None:
        self._channel: socket.socket | None = None
        self._pid = -1
        self._pidfd = -1
        self._lock = asyncio.Lock()

    async def fork(self, owner: int, msgqueue: int, hold: int, out: int) -> tuple[int, int]:
        """A holder for ``owner`` with the message-queue bound ``msgqueue``, its stdin
        ``hold`` and its stdout ``out`` (the caller keeps and closes its own fds): its
        pid and a pidfd of it (the caller's to close). OSError if the forker cannot
        start or answer, or could not fork."""
        async with self._lock:
            try:
                data, fds = await self._whole_exchange(owner, msgqueue, hold, out)
            except (OSError, TimeoutError):
                # It died (or was killed) since the last request: once more with a new
                # one. A holder the dead one forked ends when our pipes close.
                self._stop()
                try:
                    data, fds = await self._whole_exchange(owner, msgqueue, hold, out)
                except (OSError, TimeoutError) as exc:
                    self._stop()
                    raise OSError(errno.EPIPE, f"the namespace forker failed: {exc!r}") from exc
            pid, error = _ANSWER.unpack(data)
            if error or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                raise OSError(
                    error or errno.EPROTO, f"the namespace forker could not fork: {os.strerror(error)}"
                )
            return pid, fds[0]

    async def _whole_exchange(
        self, owner: int, msgqueue: int, hold: int, out: int
    ) -> tuple[bytes, array.array[int]]:
        """``_exchange``, which a cancel does not cut between request and answer: an
        answer left on the channel would be read by the next request as its own (the pid
        of a holder that is gone: every create after a cancelled one failed). The
        cancel is raised once the answer is read; its pidfd is closed, and its holder
        ends when the caller closes its pipes."""
        step = asyncio.ensure_future(self._exchange(owner, msgqueue, hold, out))
        try:
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            await asyncio.wait([step])
            if step.cancelled() or step.exception() is not None:
                self._stop()  # the channel's state is unknown: a new forker next time
            else:
                for fd in step.result()[1]:
                    os.close(fd)
            raise

    async def _exchange(
        self, owner: int, msgqueue: int, hold: int, out: int
    ) -> tuple[bytes, array.array[int]]:
        """One request and its answer (whole, else OSError)."""
        channel = self._running()
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [hold, out]))]
        channel.sendmsg([_REQUEST.pack(owner, msgqueue)], rights)
        await spawn.wait_readable(channel.fileno(), READY_TIMEOUT_S)
        data, ancillary, _flags, _addr = channel.recvmsg(_ANSWER.size, socket.CMSG_SPACE(_FD_SIZE))
        fds: array.array[int] = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
        if len(data) != _ANSWER.size:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.EPIPE, "the namespace forker ended")
        return data, fds

    def _running(self) -> socket.socket:
        if self._channel is not None and not _ended(self._pidfd):
            return self._channel
        self._stop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            argv = [sys.executable, "-I", "-S", "-X", "frozen_modules=on", str(FORKER_PATH)]
            self._pid = spawn.start(argv, fds={3: theirs.fileno()}, env=_ENV)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._pidfd = os.pidfd_open(self._pid)
        ours.setblocking(False)
        self._channel = ours
        return ours

    def _stop(self) -> None:
        """Close the channel and end the forker (killed, then reaped: it is our child)."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)  # killed: returns at once
            os.close(self._pidfd)
            self._pidfd = -1


def _ended(pidfd: int) -> bool:
    """Whether the process of ``pidfd`` has ended (a pidfd is readable then)."""
    return bool(select.select([pidfd], [], [], 0)[0])


_forker = Forker()


def owner_uid(paths: SandboxPaths, base: int, count: int) -> int:
    """The owner uid of the sandbox at ``paths``: the one recorded in its dir if it is
    in ``[base, base + count)``, else a new one no other sandbox holds (probing from a
    hash of the id; the registry answers each probe in O(1)), recorded. Blocking;
    callers serialise the calls of one sandboxes dir (two at once could pick the same
    uid). RuntimeFailure when every uid of the range is taken."""
    registry = _registry(paths.dir.parent)
    mine = _read_owner(paths.dir)
    if mine is not None and base <= mine < base + count:
        _claim(registry, mine, paths.id)
        return mine
    start = int.from_bytes(hashlib.sha256(paths.id.encode()).digest()[:8], "big") % count
    for step in range(count):
        owner = base + (start + step) % count
        if _claim(registry, owner, paths.id):
            break
    else:
        raise RuntimeFailure(f"all {count} user-namespace owner uids are taken (CORRAL_USERNS_OWNER_COUNT)")
    _write_owner(paths.dir, owner)
    return owner


def release(paths: SandboxPaths) -> None:
    """Free the owner uid the sandbox at ``paths`` holds (before its dir is removed);
    a no-op when it holds none. Blocking."""
    owner = _read_owner(paths.dir)
    if owner is None:
        return
    link = paths.dir.parent / OWNERS_DIR / str(owner)
    try:
        if os.readlink(link) == paths.id:
            os.unlink(link)
    except OSError:
        pass


def _registry(sandboxes: Path) -> Path:
    """The owners' registry of a sandboxes dir, made on first use from the owners its
    dirs record (dirs made before the registry existed: once, O(n))."""
    registry = sandboxes / OWNERS_DIR
    if registry.is_dir():
        return registry
    building = sandboxes / f"{OWNERS_DIR}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(building)
    building.mkdir(mode=0o700)
    with os.scandir(sandboxes) as entries:
        for entry in entries:
            if valid_id(entry.name) and entry.is_dir(follow_symlinks=False):
                owner = _read_owner(Path(entry.path))
                if owner is not None:
                    with contextlib.suppress(FileExistsError):
                        os.symlink(entry.name, building / str(owner))
    try:
        os.rename(building, registry)
    except OSError:  # made meanwhile by another process
        shutil.rmtree(building, ignore_errors=True)
    return registry


def _claim(registry: Path, owner: int, sandbox_id: str) -> bool:
    """Claim ``owner`` for ``sandbox_id``: True if it is now (or was already) its, False
    if another live sandbox holds it. A claim whose holder's dir does not record that
    owner (gone, or crashed before recording it) is stale and taken over."""
    link = registry / str(owner)
    try:
        os.symlink(sandbox_id, link)
        return True
    except FileExistsError:
        pass
    try:
        holder = os.readlink(link)
    except FileNotFoundError:  # released meanwhile
        return _claim(registry, owner, sandbox_id)
    if holder == sandbox_id:
        return True
    if valid_id(holder) and _read_owner(registry.parent / holder) == owner:
        return False
    os.unlink(link)
    os.symlink(sandbox_id, link)
    return True


def _read_owner(directory: Path) -> int | None:
    try:
        fd = os.open(directory / OWNER_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode(errors="replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() else None


def _write_owner(directory: Path, owner: int) -> None:
    temporary = directory / f".{OWNER_FILE}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, f"{owner}\n".encode())
    finally:
        os.close(fd)
    os.rename(temporary, directory / OWNER_FILE)


@dataclass
class UserNamespace:
    """A user namespace held open by its holder process until ``close``. The holder is
    forked by the server's forker (``Forker``), not by the server, whose fork under
    uvloop stalled the event loop for the whole fork (tens of milliseconds on a busy
    machine); it holds the namespace until ``hold``, its stdin, is closed."""

    owner: int
    pid: int
    pidfd: int
    hold: int  # our end of the holder's stdin
    ended: bool = False  # once ``close`` saw it end

    @property
    def path(self) -> str:
        """Where runc finds it (``linux.namespaces[].path``) while it is open."""
        return f"/proc/{self.pid}/ns/user"

    @classmethod
    async def make(cls, *, owner: int, uid_base: int, uid_count: int, msgqueue_bytes: int) -> UserNamespace:
        """A new user namespace owned by host uid ``owner``, with container ids
        0..``uid_count``-1 mapped to host ``uid_base``.. (uids and gids), whose users
        together may hold ``msgqueue_bytes`` of POSIX message queues (at most the
        caller's own hard limit), queued signals and processes up to the caller's
        RLIMIT_SIGPENDING and RLIMIT_NPROC, inotify instances and watches up to the
        host's per-user limits. RuntimeFailure, with nothing left running,
        if it cannot be made."""
        hard = resource.getrlimit(resource.RLIMIT_MSGQUEUE)[1]
        msgqueue = msgqueue_bytes if hard == resource.RLIM_INFINITY else min(msgqueue_bytes, hard)
        hold_r, hold_w = os.pipe2(os.O_CLOEXEC)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        try:
            pid, pidfd = await _forker.fork(owner, msgqueue, hold_r, out_w)
        except BaseException as exc:
            for fd in (hold_w, out_r):
                os.close(fd)
            if isinstance(exc, OSError):
                raise RuntimeFailure(f"making the user namespace of owner {owner}: {exc!r}") from exc
            raise
        finally:
            os.close(hold_r)
            os.close(out_w)
        made = cls(owner, pid, pidfd, hold_w)
        os.set_blocking(out_r, False)
        try:
            with contextlib.suppress(BrokenPipeError):  # the holder failed: its message follows
                os.write(hold_w, _READY)  # the pipe holds it until the holder reads
            ready = await _read(out_r, READY_TIMEOUT_S, line=True)
            if ready != _READY:
                error = (ready + await _read(out_r, READY_TIMEOUT_S)).decode(errors="replace")
                raise RuntimeFailure(f"making the user namespace of owner {owner}: {error.strip()[-500:]}")
            mapping = f"0 {uid_base} {uid_count}\n"
            _write_maps(pid, mapping)  # two writes to /proc: on the loop, no thread's turn
        except BaseException as exc:
            await made.close()
            if isinstance(exc, OSError | TimeoutError):
                raise RuntimeFailure(f"making the user namespace of owner {owner}: {exc!r}") from exc
            raise
        finally:
            os.close(out_r)
        return made

    async def close(self) -> None:
        """End the holder (the namespace lives on in the processes that joined it) and
        wait until it has. Idempotent."""
        if self.hold >= 0:
            os.close(self.hold)  # the holder sees the end of its input
            self.hold = -1
        if self.ended:
            return
        try:
            await spawn.wait_readable(self.pidfd, 5.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            await spawn.wait_readable(self.pidfd, 5.0)
        self.ended = True  # the forker reaps it
        os.close(self.pidfd)


async def _read(fd: int, timeout: float, *, line: bool = False) -> bytes:
    """What the non-blocking pipe ``fd`` carries until EOF (with ``line``: until its
    first newline). TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    data = b""
    while not (line and b"\n" in data):
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            await spawn.wait_readable(fd, max(0.0, deadline - loop.time()))
            continue
        if not chunk:
            break
        data += chunk
    return data


def _write_maps(pid: int, mapping: str) -> None:
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, mapping.encode())
        finally:
            os.close(fd)
