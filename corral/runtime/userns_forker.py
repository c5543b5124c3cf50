"""The forker of sandboxes' user-namespace holders: one small process per server.

Run as ``python3 -I -S -X frozen_modules=on userns_forker.py`` with a socket at fd 3
(``userns.Forker`` starts it; stdlib only, nothing of corral is imported). For each
request on that socket (8 bytes: owner uid, RLIMIT_MSGQUEUE bytes, as two native
unsigned ints, with two fds in SCM_RIGHTS: the read end of the hold pipe and the write
end of the answer pipe), it forks a holder and answers 8 bytes (the holder's pid, 0;
or 0, an errno) with a pidfd of the holder in SCM_RIGHTS.

The holder, in the forked child: the message-queue rlimit (soft and hard), no
supplementary groups, real, effective and saved gid and uid the owner (a non-root uid:
root is refused), then ``unshare(CLONE_NEWUSER)``: the new namespace is owned by the
owner and takes its bounds from the rlimits; then it drops the capabilities the
unshare gave it in the new namespace. Then it does what ``cat`` did at the end of
the programs this replaces (prlimit, setpriv, unshare, cat: four execs a sandbox): it
copies the hold pipe to the answer pipe until the hold pipe ends, so the line the server
writes comes back once the namespace exists, and the namespace is held until the server
closes its end (or dies). It runs no program and keeps no other fd; a failing step
writes its error to the answer pipe and exits 1.

The forker ends when its socket does (the server stopped or died). Children are reaped
as they end; the server watches each through its pidfd, opened here while the child
could not yet have been reaped, so it is never another process's.
"""

from __future__ import annotations

import array
import ctypes
import os
import resource
import select
import signal
import socket
import struct
import sys

CLONE_NEWUSER = 0x10000000
CAPABILITY_VERSION_3 = 0x20080522  # linux/capability.h: two 32-bit words of each set
REQUEST = struct.Struct("=II")
ANSWER = struct.Struct("=ii")
SOCKET_FD = 3


def _hold(owner: int, msgqueue: int, hold: int, out: int, libc: ctypes.CDLL) -> None:
    """The holder's life, in the forked child; never returns."""
    code = 1
    try:
        os.dup2(hold, 0)
        os.dup2(out, 1)
        os.closerange(2, os.sysconf("SC_OPEN_MAX"))  # close_range: the socket, the fds
        if not 0 < owner < 0xFFFFFFFF:
            raise OSError(1, f"owner uid {owner} refused (root or invalid)")
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (msgqueue, msgqueue))
        os.setgroups([])
        os.setresgid(owner, owner, owner)
        os.setresuid(owner, owner, owner)
        if libc.unshare(CLONE_NEWUSER) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"unshare: {os.strerror(error)}")
        # In its new namespace it holds every capability (over that namespace only); it
        # needs none to copy a pipe, so it drops them (an exec did, in the programs before).
        header = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0)
        if libc.capset(header, (ctypes.c_uint32 * 6)()) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"capset: {os.strerror(error)}")
        while chunk := os.read(0, 4096):
            os.write(1, chunk)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - told to the server, then exit
        try:
            os.write(1, f"userns holder: {exc}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _reap(*_: object) -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(channel: socket.socket) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    # SIGCHLD wakes the loop (set_wakeup_fd) and the loop reaps; default disposition, so
    # an ended child stays a zombie until then and its pidfd cannot name another process.
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _reap)
    fd_size = array.array("i").itemsize
    while True:
        ready, _, _ = select.select([channel.fileno(), wake_r], [], [])
        if wake_r in ready:
            while True:
                try:
                    if not os.read(wake_r, 512):
                        break
                except BlockingIOError:
                    break
            _reap()
        if channel.fileno() not in ready:
            continue
        try:
            data, ancillary, _flags, _addr = channel.recvmsg(REQUEST.size, socket.CMSG_SPACE(2 * fd_size))
        except InterruptedError:
            continue
        fds = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fd_size])
        if not data:
            return  # the server is gone
        try:
            if len(data) != REQUEST.size or len(fds) != 2:
                _answer(channel, 0, 22)  # EINVAL
                continue
            owner, msgqueue = REQUEST.unpack(data)
            try:
                pid = os.fork()
            except OSError as exc:
                _answer(channel, 0, exc.errno or 12)
                continue
            if pid == 0:
                _hold(owner, msgqueue, fds[0], fds[1], libc)
            pidfd = os.pidfd_open(pid)
            try:
                _answer(channel, pid, 0, pidfd)
            finally:
                os.close(pidfd)
        finally:
            for fd in fds:
                os.close(fd)


def _answer(channel: socket.socket, pid: int, error: int, pidfd: int | None = None) -> None:
    ancillary = [] if pidfd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pidfd]))]
    channel.sendmsg([ANSWER.pack(pid, error)], ancillary)


if __name__ == "__main__":
    with socket.socket(fileno=SOCKET_FD) as server:
        server.setblocking(True)
        try:
            serve(server)
        except (BrokenPipeError, ConnectionResetError):
            pass
    sys.exit(0)
