"""Start a program with chosen file descriptors at chosen numbers, and await its exit.

``asyncio.create_subprocess_exec`` can pass extra descriptors but only under their own
numbers; runc's ``--preserve-fds`` needs the agent's listening socket at exactly fd 3.
So this uses ``posix_spawn`` (dup2 file actions, its own session; libc's, through
ctypes, so that the GIL is let go while the child gets to its exec) and waits on a
pidfd registered with the event loop: no thread, no SIGCHLD handler, works under uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import Any

_HIGH_FD = 64


# Inherited, these would make runc pass our socket-activation fds or systemd's notify
# socket into the sandbox (runc honours both); nothing we start needs them.
SERVICE_MANAGER_VARIABLES = frozenset({"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET"})


def child_environment() -> dict[str, str]:
    """Our environment minus what a service manager set for us alone."""
    return {key: value for key, value in os.environ.items() if key not in SERVICE_MANAGER_VARIABLES}


async def spawn(
    argv: Sequence[str], *, fds: Mapping[int, int], timeout: float, new_session: bool = True
) -> int:
    """Run ``argv`` with ``fds`` (target number -> our fd; unlisted 0-2 are /dev/null)
    in its own session and return its exit status (negative: killed by that signal).

    Raises FileNotFoundError if the program is missing and TimeoutError after
    ``timeout`` seconds (the process is killed and reaped first). Cancelling does not
    interrupt the program (a runc killed halfway leaves state that nothing can delete):
    it is waited for, within what is left of ``timeout``, then CancelledError is raised.
    """
    pid = start(argv, fds=fds, new_session=new_session)
    return await _wait(pid, timeout)


def start(
    argv: Sequence[str],
    *,
    fds: Mapping[int, int],
    new_session: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``argv`` with ``fds`` (target number -> our fd; unlisted 0-2 are
    /dev/null), in its own session with ``new_session``, and return its pid as soon as it
    has exec'd: the caller reaps it (``os.waitpid`` once its pidfd is readable, see
    ``wait_readable``). ``env`` defaults to :func:`child_environment`. Raises
    FileNotFoundError if the program is missing."""
    program = shutil.which(argv[0], path=(env or os.environ).get("PATH"))
    if program is None:
        raise FileNotFoundError(argv[0])
    # Lift every source fd above the targets so one dup2 cannot clobber another's source.
    lifted = {target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for target, source in fds.items()}
    try:
        actions: list[Any] = [
            (os.POSIX_SPAWN_OPEN, target, "/dev/null", os.O_RDWR, 0)
            for target in (0, 1, 2)
            if target not in lifted
        ]
        actions.extend((os.POSIX_SPAWN_DUP2, source, target) for target, source in lifted.items())
        return _posix_spawn(program, list(argv), actions, new_session, env)
    finally:
        for fd in lifted.values():
            os.close(fd)


async def _wait(pid: int, timeout: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pidfd = os.pidfd_open(pid)
    exited: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _resolve, exited)
    cancelled = False
    try:
        while not exited.done():
            try:
                await asyncio.wait_for(asyncio.shield(exited), max(0.0, deadline - loop.time()))
            except asyncio.CancelledError:
                cancelled = True  # finish first, then honour it
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                raise
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
        status = _reap(pid)
    if cancelled:
        raise asyncio.CancelledError
    return os.waitstatus_to_exitcode(status)


async def capture(
    argv: Sequence[str],
    *,
    stdin: bytes | None = None,
    timeout: float,
    nice: int = 0,
    env: Mapping[str, str] | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with ``stdin`` (None: /dev/null) and return (exit status, stdout,
    stderr); ``nice`` > 0 lowers its priority before it gets its input; ``env``
    defaults to :func:`child_environment`.

    What ``asyncio.create_subprocess_exec`` does, minus its cost under uvloop (a fork
    of the whole server, ~6 ms a process, against ~1 ms for ``posix_spawn``). Raises
    FileNotFoundError if the program is missing and TimeoutError after ``timeout``
    seconds; on a timeout or a cancellation the program is killed and reaped first.
    """
    program = shutil.which(argv[0])
    if program is None:
        raise FileNotFoundError(argv[0])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    ours: list[int] = []  # our ends of the pipes
    theirs: list[int] = []
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        ours += [out_r, err_r]
        theirs += [out_w, err_w]
        for fd in (out_r, err_r):  # ours only: a program given a non-blocking end stops at 64 KiB
            os.set_blocking(fd, False)
        actions: list[Any] = [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        in_w = None
        if stdin is None:
            actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        else:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            ours.append(in_w)
            theirs.append(in_r)
            actions.append((os.POSIX_SPAWN_DUP2, in_r, 0))
        pid = _posix_spawn(program, list(argv), actions, False, env)
    except BaseException:
        for fd in ours + theirs:
            os.close(fd)
        raise
    for fd in theirs:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    try:
        if nice > 0:
            with contextlib.suppress(OSError):  # it may have exited already
                os.setpriority(os.PRIO_PROCESS, pid, nice)
        steps = [_drain(loop, out_r, deadline), _drain(loop, err_r, deadline)]
        if in_w is not None:
            ours.remove(in_w)  # _feed closes it
            steps.append(_feed(loop, in_w, stdin or b"", deadline))
        out, err, *_ = await asyncio.gather(*steps)
        await wait_readable(pidfd, max(0.0, deadline - loop.time()))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        raise
    finally:
        for fd in ours:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.close(pidfd)
        status = _reap(pid)  # exited, or killed just now: returns at once
    return os.waitstatus_to_exitcode(status), out, err


async def _feed(loop: asyncio.AbstractEventLoop, fd: int, data: bytes, deadline: float) -> bytes:
    """Write ``data`` to the pipe ``fd`` and close it (the reader then sees EOF).
    Returns nothing worth keeping (b"", to sit beside the drains in a gather)."""
    try:
        view = memoryview(data)
        os.set_blocking(fd, False)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                ready: asyncio.Future[None] = loop.create_future()
                loop.add_writer(fd, _resolve, ready)
                try:
                    await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
                finally:
                    loop.remove_writer(fd)
            except BrokenPipeError:
                break  # it stopped reading: its status says why
    finally:
        os.close(fd)
    return b""


async def _drain(loop: asyncio.AbstractEventLoop, fd: int, deadline: float) -> bytes:
    """Everything the pipe ``fd`` carries until EOF."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _resolve, ready)
            try:
                await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


async def wait_readable(fd: int, timeout: float) -> None:
    """Wait until ``fd`` (e.g. a pidfd: readable once the process exits) is readable;
    TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _resolve, ready)
    try:
        await asyncio.wait_for(ready, timeout)
    finally:
        loop.remove_reader(fd)


def _posix_spawn(
    program: str, argv: list[str], actions: list[Any], new_session: bool, env: Mapping[str, str] | None = None
) -> int:
    """libc's posix_spawn (vfork + exec: it returns as soon as the child has exec'd,
    never blocks on the child) with ``actions`` as ``os.posix_spawn`` takes them
    (POSIX_SPAWN_DUP2 and POSIX_SPAWN_OPEN). Called through ctypes, which lets go of
    the GIL for the call, where ``os.posix_spawn`` keeps it: on a busy machine the
    child may wait milliseconds for a CPU before it execs, and with the GIL held the
    whole server waited with it (a tenth of the server's Python time in a burst of
    creates). Raises OSError as ``os.posix_spawn`` does."""
    environment = child_environment() if env is None else env
    keep: list[bytes] = []  # what the C arrays point into, alive until the call returns
    file_actions, attributes = _SpawnBuffer(), _SpawnBuffer()
    _check(_libc.posix_spawn_file_actions_init(file_actions))
    try:
        _check(_libc.posix_spawnattr_init(attributes))
        try:
            for action in actions:
                if action[0] == os.POSIX_SPAWN_DUP2:
                    _check(_libc.posix_spawn_file_actions_adddup2(file_actions, action[1], action[2]))
                elif action[0] == os.POSIX_SPAWN_OPEN:
                    _, fd, path, flags, mode = action
                    keep.append(os.fsencode(path))
                    _check(_libc.posix_spawn_file_actions_addopen(file_actions, fd, keep[-1], flags, mode))
                else:
                    raise ValueError(f"unsupported spawn action {action!r}")
            if new_session:
                _check(_libc.posix_spawnattr_setflags(attributes, _POSIX_SPAWN_SETSID))
            c_argv = _strings([os.fsencode(arg) for arg in argv], keep)
            c_env = _strings([os.fsencode(f"{key}={value}") for key, value in environment.items()], keep)
            pid = ctypes.c_int()
            error = _libc.posix_spawn(
                ctypes.byref(pid), os.fsencode(program), file_actions, attributes, c_argv, c_env
            )
            if error:
                raise OSError(error, os.strerror(error), program)
            return pid.value
        finally:
            _libc.posix_spawnattr_destroy(attributes)
    finally:
        _libc.posix_spawn_file_actions_destroy(file_actions)


# posix_spawn_file_actions_t and posix_spawnattr_t are opaque: 80 and 336 bytes in
# glibc on 64-bit machines; their init functions fill whatever room they need of these.
_SpawnBuffer = ctypes.c_char * 1024
_POSIX_SPAWN_SETSID = 0x80  # glibc's spawn.h, since 2.26
_libc = ctypes.CDLL(None, use_errno=True)
_libc.posix_spawn.argtypes = [
    ctypes.POINTER(ctypes.c_int),
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_char_p),
    ctypes.POINTER(ctypes.c_char_p),
]
_libc.posix_spawn_file_actions_adddup2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
_libc.posix_spawn_file_actions_addopen.argtypes = [
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_int,
    ctypes.c_uint,
]
_libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]


def _strings(items: list[bytes], keep: list[bytes]) -> Any:
    """A NULL-terminated ``char *[]`` of ``items`` (kept alive through ``keep``)."""
    keep.extend(items)
    return (ctypes.c_char_p * (len(items) + 1))(*items, None)


def _check(error: int) -> None:
    if error:
        raise OSError(error, os.strerror(error))


def _reap(pid: int) -> int:
    # Called once the pidfd said the child exited (or after SIGKILL): returns at once.
    return os.waitpid(pid, 0)[1]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
