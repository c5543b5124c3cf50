"""The corral agent: PID 1 of every sandbox (docs/agent-protocol.md).

Standalone and stdlib-only. runc bind-mounts this one file read-only and starts it
with fd 3 a listening unix stream socket: ``python3 -I -S /opt/corral/agent.py
--listen-fd 3``, or better the ``-c`` form of ``corral.agent.wire.agent_argv``
(3 MB less memory). ``--socket PATH`` makes it bind PATH itself (tests, the process
runtime). Commands get the agent's own environment plus PATH, HOME=/root and
LANG=C.UTF-8 where missing, and the agent's working directory by default. With
``--user USER`` (a Dockerfile template's ``USER``) the agent stays root and runs every
command, session and PTY as that user (through ``setpriv``), with HOME its home; file
operations stay root's.

How it is built, and why:

* One thread around one ``select.epoll`` loop. asyncio, selectors, socket and json
  together cost ~10 ms of start-up and ~10 MB of memory, so this file uses their C
  halves (``_socket``, ``_json``) and imports pty, fcntl, shutil and threading lazily.
* Every process starts with ``os.posix_spawn`` (vfork) in a session of its own, so its
  pid is its process group; a PTY slave opened by the child after ``setsid`` becomes
  its controlling terminal. A SIGCHLD-driven ``waitpid(-1)`` reaper collects every
  zombie and hands each exit status to the owner of the pid; nothing else waits.
* Every fd is non-blocking and every buffer is bounded: process output is read only
  while the connections it goes to keep up (backpressure), a host's stdin is read only
  while the process keeps up, and each frame is at most 1 MiB. A malformed frame ends
  only its own connection, with an ``invalid`` error frame.
* A connection ends by flushing, shutting down its write side and discarding input
  until the host closes, so the host always reads the last frame instead of a reset.
* Before it listens, the agent takes itself out of reach of the code it runs
  (``shield``: not dumpable, and a saved gid no process matches), so commands, root
  like the agent, cannot ptrace it or take its fds (docs/security.md).
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import sys
import time
from _heapq import heapify, heappop, heappush

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable
    from typing import Any

    Json = dict[str, Any]
else:
    import _signal as signal  # the C module: "signal" itself costs 4 ms of enum

VERSION = "1"

# frame types (corral/agent/wire.py FrameType)
T_STDIN = 0x00
T_STDOUT = 0x01
T_STDERR = 0x02
T_EXIT = 0x03
T_SCROLLBACK_END = 0x04
T_DATA = 0x05
T_EOF = 0x06
T_JSON = 0x10
HOST_TYPES = frozenset((T_STDIN, T_DATA, T_EOF, T_JSON))

MAX_PAYLOAD = 1 << 20  # every frame, both directions
DATA_CHUNK = 256 << 10  # file.read DATA frames
READ_CHUNK = 64 << 10  # one read of process output
SCROLLBACK = 1 << 20  # per session
EXITED_KEPT = 128  # exited sessions kept for late attaches
HIGH_WATER = 1 << 20  # a connection with this much unsent output pauses its producers
LOW_WATER = 256 << 10  # ... until it is back below this
STDIN_LIMIT = 1 << 20  # buffered stdin per session before the host is paused
REQUEST_DEADLINE = 30.0  # from accept to the request frame
CLOSE_DEADLINE = 30.0  # from the last answer to the host closing
DRAIN_GRACE = 0.2  # after a process exits, how long its output pipes may stay open
ANSWER_BUDGET = 960 << 10  # bytes of JSON a list answer may fill
LIST_LIMIT = 10_000  # entries of one file.list answer, at most

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
EPOLLGONE = select.EPOLLHUP | select.EPOLLERR
S_IFMT, S_IFDIR, S_IFREG, S_IFLNK = 0o170000, 0o040000, 0o100000, 0o120000

ERRNO_CODES = {
    errno.ENOENT: "not_found",
    errno.ENOTDIR: "not_dir",
    errno.EISDIR: "is_dir",
    errno.EEXIST: "exists",
    errno.ENOTEMPTY: "not_empty",
    errno.EACCES: "denied",
    errno.EPERM: "denied",
    errno.EROFS: "denied",
    errno.EBUSY: "denied",
    errno.ENOSPC: "no_space",
    errno.EDQUOT: "no_space",
    errno.EFBIG: "no_space",
    errno.ENAMETOOLONG: "invalid",
    errno.ELOOP: "invalid",
    errno.EINVAL: "invalid",
}


# --------------------------------------------------------------------------- JSON


class _DecodeContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")


def _unencodable(obj: object) -> object:
    raise TypeError(f"{type(obj).__name__} is not JSON")


try:  # json's C half directly: importing json (and re) costs ~4 ms of start-up
    import _json

    _scan = _json.make_scanner(_DecodeContext())  # type: ignore[arg-type]
    # markers, default, encoder, indent, key separator, item separator, sort, skipkeys, allow_nan
    _encode = _json.make_encoder(
        None, _unencodable, _json.encode_basestring_ascii, None, ":", ",", False, False, False
    )
except (ImportError, AttributeError, TypeError):  # a Python whose _json differs: the slow way
    import json

    _scan = json.JSONDecoder(parse_constant=_DecodeContext.parse_constant).raw_decode  # type: ignore[assignment]
    _encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).iterencode  # type: ignore[assignment]


def dumps(obj: object) -> bytes:
    """Compact ASCII JSON (non-UTF-8 file names survive as \\udcXX escapes)."""
    return "".join(_encode(obj, 0)).encode("ascii")


def loads_object(payload: bytes) -> Json:
    """Decode one JSON object; OpError("invalid") for anything else."""
    try:
        text = payload.decode("utf-8")
        start = len(text) - len(text.lstrip(" \t\r\n"))
        obj, end = _scan(text, start)
    except (StopIteration, ValueError, RecursionError, SystemError) as exc:
        # SystemError: the C scanner builds its error from json.decoder, which is
        # deliberately not imported (start-up time), and then fails without one
        raise OpError("invalid", "malformed JSON") from exc
    if text[end:].strip(" \t\r\n") or not isinstance(obj, dict):
        raise OpError("invalid", "expected one JSON object")
    return obj


# ------------------------------------------------------------------------- errors


class OpError(Exception):
    """An operation failed with a protocol error code; sent as the answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def os_error(exc: OSError, what: str) -> OpError:
    return OpError(ERRNO_CODES.get(exc.errno or 0, "io"), f"{what}: {exc.strerror or exc}")


def log(message: str) -> None:
    try:
        os.write(2, f"corral-agent: {message}\n".encode(errors="replace"))
    except OSError:
        pass


# -------------------------------------------------------------- request fields


def want_str(req: Json, key: str, *, limit: int = 4096, optional: bool = False) -> str | None:
    value = req.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or "\0" in value:
        raise OpError("invalid", f"{key}: expected a non-empty string")
    return value


def want_path(req: Json) -> str:
    """The request's absolute ``path``. With ``within`` (an absolute directory) the
    path, its symlinks resolved here in the sandbox, must stay inside that directory
    (``denied`` otherwise): a link in the workspace cannot lead a file op out of it."""
    path = want_str(req, "path")
    assert path is not None
    if not path.startswith("/"):
        raise OpError("invalid", "path: must be absolute")
    within = want_str(req, "within", optional=True)
    if within is not None:
        real, top = os.path.realpath(path), os.path.realpath(within)
        if real != top and not real.startswith(top.rstrip("/") + "/"):
            raise OpError("denied", f"{path}: leads outside {within}")
    return path


def want_args(req: Json) -> list[str]:
    args = req.get("args")
    if args is None:
        return []
    if not isinstance(args, list) or not all(isinstance(a, str) and "\0" not in a for a in args):
        raise OpError("invalid", "args: expected a list of strings")
    return args


def want_envs(req: Json) -> dict[str, str]:
    envs = req.get("envs")
    if envs is None:
        return {}
    if not isinstance(envs, dict):
        raise OpError("invalid", "envs: expected an object of strings")
    for key, value in envs.items():
        if not key or "=" in key or "\0" in key or not isinstance(value, str) or "\0" in value:
            raise OpError("invalid", f"envs: bad entry {key!r}")
    return envs


def want_seconds(req: Json, key: str) -> float | None:
    """A positive number of seconds; absent, null or <= 0 mean none."""
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value < 1e8:
        raise OpError("invalid", f"{key}: expected seconds")
    return float(value) if value > 0 else None


def want_int(req: Json, key: str, low: int, high: int) -> int:
    value = req.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OpError("invalid", f"{key}: expected an integer in [{low}, {high}]")
    return value


# ------------------------------------------------------------------- event loop


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    """epoll plus a timer heap. Handlers get ``(fd, events)``; an exception in one is
    logged and handed to its owner's ``crashed`` so it ends only that owner."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.masks: dict[int, int] = {}
        self.handlers: dict[int, Callable[[int, int], None]] = {}
        self.timers: list[Timer] = []

    def watch(self, fd: int, mask: int, handler: Callable[[int, int], None]) -> None:
        """Watch ``fd`` for ``mask``; a mask of 0 stops watching it. Call with 0
        before closing an fd."""
        old = self.masks.get(fd)
        if not mask:
            if old is not None:
                del self.masks[fd], self.handlers[fd]
                self.epoll.unregister(fd)
            return
        self.handlers[fd] = handler
        if old is None:
            self.epoll.register(fd, mask)
        elif old != mask:
            self.epoll.modify(fd, mask)
        self.masks[fd] = mask

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        timers = self.timers
        heappush(timers, timer)
        if len(timers) > 4096 and len(timers) & 1023 == 0:  # drop cancelled ones
            timers[:] = [t for t in timers if not t.cancelled]
            heapify(timers)
        return timer

    def run(self) -> None:
        timers, handlers, poll = self.timers, self.handlers, self.epoll.poll
        while True:
            while timers and timers[0].cancelled:
                heappop(timers)
            timeout = max(0.0, timers[0].when - time.monotonic()) if timers else -1.0
            for fd, events in poll(timeout):
                handler = handlers.get(fd)
                if handler is not None:
                    guarded(handler, fd, events)
            if timers:
                now = time.monotonic()
                while timers and timers[0].when <= now:
                    timer = heappop(timers)
                    if not timer.cancelled:
                        guarded(timer.callback)


def guarded(fn: Callable[..., None], *args: int) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 -- a bug must end one connection, not the agent
        log(f"internal error in {getattr(fn, '__qualname__', fn)}: {exc!r}")
        crashed = getattr(getattr(fn, "__self__", None), "crashed", None)
        if crashed is not None:
            try:
                crashed(exc)
            except Exception as again:  # noqa: BLE001
                log(f"cleanup failed: {again!r}")


def close_fd(loop: Loop, fd: int) -> None:
    loop.watch(fd, 0, _ignore)
    try:
        os.close(fd)
    except OSError:
        pass


def _ignore(fd: int, events: int) -> None:
    pass


# ------------------------------------------------------------------- connection


class Op:
    """What a connection does with the frames after its request."""

    def frame(self, ftype: int, payload: bytes) -> None:
        raise OpError("invalid", f"unexpected frame type {ftype:#x}")

    def detach(self) -> None:
        """The connection ends before the operation did: release what it holds."""


class Conn:
    """One host connection: one request frame, one operation, then close."""

    def __init__(self, agent: Agent, sock: _socket.socket) -> None:
        self.agent, self.loop, self.sock = agent, agent.loop, sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.out = bytearray()
        self.op: Op | None = None
        self.requested = False
        self.read_paused = False
        self.closing = False  # last frame queued: flush, shut down, discard input
        self.shut = False
        self.closed = False
        self.on_drain: Callable[[], None] | None = None
        self.timer = self.loop.call_later(REQUEST_DEADLINE, self.abort)
        self.watch()

    # ---- output
    def buffered(self) -> int:
        return len(self.out)

    def send(self, ftype: int, payload: bytes = b"") -> None:
        if self.closing or self.closed:
            return
        out = self.out
        out += bytes((ftype,)) + len(payload).to_bytes(4, "big")
        out += payload
        if len(out) == len(payload) + 5:
            self.write()
        self.watch()

    def send_json(self, obj: object) -> None:
        payload = dumps(obj)
        if len(payload) > MAX_PAYLOAD:
            payload = dumps({"ok": False, "code": "internal", "message": "answer too large"})
        self.send(T_JSON, payload)

    def answer(self, obj: Json) -> None:
        """Send the final JSON frame of the operation and close."""
        self.op = None
        self.send_json(obj)
        self.close()

    def fail(self, err: OpError) -> None:
        """Send an error answer and close; the operation, if any, is detached."""
        self.detach_op()
        self.send_json({"ok": False, "code": err.code, "message": err.message})
        self.close()

    def crashed(self, exc: Exception) -> None:
        self.fail(OpError("internal", f"agent error: {exc!r}"))

    def write(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        del self.out[:sent]

    # ---- life cycle
    def watch(self) -> None:
        if self.closed:
            return
        mask = 0 if self.read_paused else EPOLLIN
        if self.out:
            mask |= EPOLLOUT
        self.loop.watch(self.fd, mask, self.on_io)

    def pause_reading(self) -> None:
        self.read_paused = True
        self.watch()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.parse()
            self.watch()

    def close(self) -> None:
        """Finish gracefully: flush, shut down writing, wait for the host to close."""
        if self.closing or self.closed:
            return
        self.closing = True
        self.read_paused = False
        self.inbuf.clear()
        self.timer.cancel()
        self.timer = self.loop.call_later(CLOSE_DEADLINE, self.abort)
        self.after_flush()

    def after_flush(self) -> None:
        if self.closing and not self.out and not self.closed and not self.shut:
            self.shut = True
            try:
                self.sock.shutdown(_socket.SHUT_WR)
            except OSError:
                self.abort()
                return
        self.watch()

    def abort(self) -> None:
        """Close at once (host gone, deadline passed)."""
        if self.closed:
            return
        self.detach_op()
        self.closed = True
        self.timer.cancel()
        self.loop.watch(self.fd, 0, _ignore)
        self.sock.close()
        self.agent.conns.discard(self)

    def detach_op(self) -> None:
        op, self.op = self.op, None
        self.on_drain = None
        if op is not None:
            op.detach()

    # ---- input
    def on_io(self, fd: int, events: int) -> None:
        if events & EPOLLOUT:
            before = len(self.out)
            self.write()
            if self.closed:
                return
            if self.closing:
                self.after_flush()
            elif self.on_drain is not None and len(self.out) < LOW_WATER <= before:
                self.on_drain()
            self.watch()
        if self.closed:
            return
        if events & EPOLLIN:
            self.read()
        elif events & EPOLLGONE:  # a hang-up while not reading: the host is gone
            self.abort()

    def read(self) -> None:
        for _ in range(4):
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.abort()
                return
            if not data:
                self.abort()  # the host closed (after our answer, or giving up)
                return
            if self.closing:
                continue  # discarded: the operation has ended
            self.inbuf += data
            self.parse()
            if self.closed or self.closing or self.read_paused:
                return

    def parse(self) -> None:
        buf = self.inbuf
        pos, end = 0, len(buf)
        while end - pos >= 5 and not (self.closing or self.closed or self.read_paused):
            size = int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if size > MAX_PAYLOAD:
                self.fail(OpError("invalid", f"frame of {size} bytes is over 1 MiB"))
                return
            if end - pos - 5 < size:
                break
            ftype = buf[pos]
            payload = bytes(buf[pos + 5 : pos + 5 + size])
            pos += 5 + size
            try:
                self.dispatch(ftype, payload)
            except OpError as err:
                self.fail(err)
                return
        if pos and not self.closing:
            del buf[:pos]

    def dispatch(self, ftype: int, payload: bytes) -> None:
        if ftype not in HOST_TYPES:
            raise OpError("invalid", f"unknown frame type {ftype:#x}")
        if self.op is not None:
            self.op.frame(ftype, payload)
            return
        if self.requested:
            raise OpError("invalid", "one operation per connection")
        if ftype != T_JSON:
            raise OpError("invalid", "expected a JSON request frame")
        self.requested = True
        self.timer.cancel()
        request = loads_object(payload)
        name = request.get("op")
        handler = OPS.get(name) if isinstance(name, str) else None
        if handler is None:
            raise OpError("invalid", f"unknown op {str(request.get('op'))[:64]!r}")
        try:
            handler(self.agent, self, request)
        except OSError as exc:  # EMFILE, ENOMEM and the like
            raise os_error(exc, name or "") from None
        except ValueError as exc:  # a string the OS cannot take (lone surrogates)
            raise OpError("invalid", str(exc)) from None


# -------------------------------------------------------------------- processes


class LaunchError(Exception):
    """The command could not be started; ``status`` is what a shell would exit with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def resolve(cmd: str, path_var: str) -> str:
    """Find ``cmd`` like a shell: a name with a slash as is, else along PATH."""
    if "/" in cmd:
        candidates = [cmd]
    else:
        candidates = [os.path.join(d or ".", cmd) for d in path_var.split(":")]
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if st.st_mode & S_IFMT == S_IFREG and os.access(candidate, os.X_OK):
            return candidate
        denied = candidate
    if denied is not None:
        if os.path.isdir(denied):
            raise LaunchError(126, f"{cmd}: Is a directory")
        raise LaunchError(126, f"{cmd}: Permission denied")
    if "/" in cmd:
        raise LaunchError(127, f"{cmd}: No such file or directory")
    raise LaunchError(127, f"{cmd}: command not found")


_SIGDEF: tuple[int, ...] = ()


def spawn(
    agent: Agent,
    cmd: str,
    args: list[str],
    envs: dict[str, str],
    cwd: str | None,
    pty: tuple[int, int] | None,
    stdin: bool,
    user: str | None = None,
) -> Child:
    """Start ``cmd`` in a new session; LaunchError when it cannot start."""
    global _SIGDEF
    if not _SIGDEF:
        _SIGDEF = tuple(s for s in signal.valid_signals() if s not in (9, 19))
    env = dict(agent.base_env)
    if pty is not None:
        env["TERM"] = "xterm-256color"
    env.update(envs)
    mine: list[int] = []  # parent ends: kept on success, closed on failure
    theirs: list[int] = []  # child ends: closed here once the child has them
    try:
        if pty is not None:
            try:
                master, slave = os.openpty()
            except OSError as exc:  # ENOSPC: the sandbox's devpts max=, or the kernel's pool
                if exc.errno != errno.ENOSPC:
                    raise
                raise OpError("no_pty", "pty: no pseudo-terminal is free (close one first)") from None
            mine.append(master)
            theirs.append(slave)
            set_winsize(master, *pty)
            actions: list[tuple[Any, ...]] = [
                (os.POSIX_SPAWN_OPEN, 0, os.ttyname(slave), os.O_RDWR, 0),
                (os.POSIX_SPAWN_DUP2, 0, 1),
                (os.POSIX_SPAWN_DUP2, 0, 2),
            ]
            outs = {master: T_STDOUT}
            stdin_fd: int | None = master
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            mine += (out_r, err_r)
            theirs += (out_w, err_w)
            outs = {out_r: T_STDOUT, err_r: T_STDERR}
            stdin_fd = None
            if stdin:
                in_r, stdin_fd = os.pipe()
                mine.append(stdin_fd)
                theirs.append(in_r)
                actions = [(os.POSIX_SPAWN_DUP2, in_r, 0)]
                os.set_blocking(stdin_fd, False)
            else:
                actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0)]
            actions += [(os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)]
        for fd in outs:
            os.set_blocking(fd, False)
        if cwd is not None:
            try:
                os.chdir(cwd)  # posix_spawn has no chdir action; the agent is one thread
            except OSError as exc:
                raise LaunchError(127, f"cd {cwd}: {exc.strerror}") from None
        try:
            path = resolve(cmd, env.get("PATH", DEFAULT_PATH))  # relative to cwd, like a shell
            argv = [cmd, *args]
            run_as = agent.user if user is None else user
            if run_as is not None:
                path, argv = as_user(run_as, path, argv)
            pid = os.posix_spawn(
                path, argv, env, file_actions=actions, setsid=True, setsigdef=_SIGDEF, setsigmask=()
            )
        except OSError as exc:
            status = 127 if exc.errno == errno.ENOENT else 126
            raise LaunchError(status, f"{cmd}: {exc.strerror}") from None
        except ValueError as exc:  # a string that cannot become bytes
            raise OpError("invalid", str(exc)) from None
        finally:
            if cwd is not None:
                os.fchdir(agent.home_fd)
    except BaseException:
        for fd in mine:
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    child = Child(agent, pid, outs, stdin_fd)
    agent.children[pid] = child
    return child


def user_ids(user: str) -> tuple[int, int, bool, str]:
    """uid, gid, whether the user has a passwd entry, and its home, of a Dockerfile
    ``USER`` (``name``, ``uid``, ``name:group`` or ``uid:gid``); LaunchError if unknown."""
    import grp
    import pwd

    name, _, group = user.partition(":")
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        if not name.isdigit():
            raise LaunchError(126, f"user {name!r} does not exist in this sandbox") from None
        uid, gid, known, home = int(name), int(name), False, "/"
    else:
        uid, gid, known, home = entry.pw_uid, entry.pw_gid, True, entry.pw_dir
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise LaunchError(126, f"group {group!r} does not exist in this sandbox") from None
    return uid, gid, known, home


def as_user(user: str, path: str, argv: list[str]) -> tuple[str, list[str]]:
    """The program and argv that run ``path`` as ``user``: through util-linux's
    ``setpriv`` (posix_spawn cannot change ids), with the user's groups."""
    uid, gid, known, _home = user_ids(user)
    if uid == 0:
        return path, argv
    setpriv = resolve("setpriv", DEFAULT_PATH)
    groups = "--init-groups" if known and ":" not in user else "--clear-groups"
    return setpriv, ["setpriv", f"--reuid={uid}", f"--regid={gid}", groups, "--", path, *argv[1:]]


def set_winsize(fd: int, cols: int, rows: int) -> None:
    import fcntl
    import termios

    size = b"".join(n.to_bytes(2, sys.byteorder) for n in (rows, cols, 0, 0))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


class Owner:
    """Receives a child's output and its end."""

    def output(self, stream: int, data: bytes) -> None: ...

    def finished(self, status: int) -> None: ...


class Child:
    """A spawned process group: output fds, a stdin fd, and its exit status.

    The owner sees ``output`` calls, then exactly one ``finished`` once the process has
    been reaped and its output has hit EOF (or DRAIN_GRACE passed since the exit, for
    background processes that keep the pipes open)."""

    def __init__(self, agent: Agent, pid: int, outs: dict[int, int], stdin_fd: int | None):
        self.agent, self.loop, self.pid = agent, agent.loop, pid
        self.owner: Owner = Owner()
        self.outs = outs
        self.stdin_fd = stdin_fd
        self.stdin_buf = bytearray()
        self.stdin_eof = False
        self.paused = False
        self.status: int | None = None
        self.done = False
        self.grace: Timer | None = None
        self.watch()

    def watch(self) -> None:
        for fd in (*self.outs, self.stdin_fd):
            if fd is None:
                continue
            mask = EPOLLIN if fd in self.outs and not self.paused else 0
            if fd == self.stdin_fd and self.stdin_buf:
                mask |= EPOLLOUT
            self.loop.watch(fd, mask, self.on_io)

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self.watch()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.watch()

    def kill(self, sig: int) -> None:
        if not self.done:
            try:
                os.killpg(self.pid, sig)
            except OSError:
                pass

    def crashed(self, exc: Exception) -> None:
        self.kill(signal.SIGKILL)

    # ---- stdin
    def write_stdin(self, data: bytes) -> None:
        if self.stdin_fd is None or self.stdin_eof:
            return
        self.stdin_buf += data
        self.flush_stdin()

    def close_stdin(self) -> None:
        """EOF after what is buffered (pipes only; a PTY has no EOF of its own)."""
        if self.stdin_fd is not None and self.stdin_fd not in self.outs:
            self.stdin_eof = True
            self.flush_stdin()

    def stdin_full(self) -> bool:
        return len(self.stdin_buf) >= STDIN_LIMIT

    def flush_stdin(self) -> None:
        fd = self.stdin_fd
        if fd is None:
            return
        was_full = self.stdin_full()
        while self.stdin_buf:
            try:
                n = os.write(fd, self.stdin_buf[:65536])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # the process closed its stdin: nothing will read this
                self.stdin_buf.clear()
                break
            del self.stdin_buf[:n]
        if self.stdin_eof and not self.stdin_buf and fd not in self.outs:
            self.stdin_fd = None
            close_fd(self.loop, fd)
        else:
            self.watch()
        if was_full and not self.stdin_full() and isinstance(self.owner, Session):
            self.owner.stdin_drained()

    # ---- output and exit
    def on_io(self, fd: int, events: int) -> None:
        if events & EPOLLOUT and fd == self.stdin_fd:
            self.flush_stdin()
        if fd not in self.outs:
            if events & EPOLLGONE and fd == self.stdin_fd:  # reader gone
                self.stdin_buf.clear()
                self.flush_stdin()
            return
        if events & EPOLLIN or (events & EPOLLGONE and not self.paused):
            for _ in range(4):
                if not self.read_out(fd) or self.paused:
                    break
        elif events & EPOLLGONE:  # paused PTY master whose terminal closed
            self.stdin_buf.clear()
            self.watch()

    def read_out(self, fd: int) -> bool:
        """One read; False when nothing more is there now."""
        try:
            data = os.read(fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # EIO: the PTY's other side is closed
            data = b""
        if not data:
            del self.outs[fd]
            if fd == self.stdin_fd:
                self.stdin_fd = None
                self.stdin_buf.clear()
            close_fd(self.loop, fd)
            self.check_done()
            return False
        self.owner.output(self.outs[fd], data)
        return True

    def reaped(self, status: int) -> None:
        self.status = status
        if not self.check_done():
            self.grace = self.loop.call_later(DRAIN_GRACE, self.finish)

    def check_done(self) -> bool:
        if self.status is not None and not self.outs and not self.done:
            self.finish()
            return True
        return False

    def finish(self) -> None:
        """Deliver the exit once: drain what the pipes hold now, close everything."""
        if self.done:
            return
        self.done = True
        for fd in list(self.outs):
            budget = MAX_PAYLOAD
            while budget > 0 and fd in self.outs and self.read_out(fd):
                budget -= READ_CHUNK
        if self.grace is not None:
            self.grace.cancel()
        for open_fd in {*self.outs, self.stdin_fd}:
            if open_fd is not None:
                close_fd(self.loop, open_fd)
        self.outs = {}
        self.stdin_fd = None
        self.stdin_buf.clear()
        assert self.status is not None
        self.owner.finished(self.status)


# ------------------------------------------------------------------------- exec


class ExecOp(Op, Owner):
    """``exec``: stream output, then the exit; the host leaving kills the group.
    With ``limit``, at most that many bytes of each stream are sent (the rest is read
    and dropped here, at the source) and the answer says ``truncated``."""

    def __init__(self, conn: Conn, child: Child, timeout: float | None, limit: int | None = None) -> None:
        self.conn, self.child = conn, child
        self.timed_out = False
        self.limit = limit
        self.left = {T_STDOUT: limit or 0, T_STDERR: limit or 0}
        self.truncated = False
        self.timer = conn.loop.call_later(timeout, self.expire) if timeout else None
        conn.on_drain = child.resume
        child.owner = self

    def expire(self) -> None:
        self.timed_out = True
        self.child.kill(signal.SIGKILL)

    def output(self, stream: int, data: bytes) -> None:
        if self.limit is not None:
            left = self.left[stream]
            if len(data) > left:
                self.truncated = True
                data = data[:left]
                if not data:
                    return
            self.left[stream] = left - len(data)
        self.conn.send(stream, data)
        if self.conn.buffered() >= HIGH_WATER:
            self.child.pause()

    def finished(self, status: int) -> None:
        if self.timer is not None:
            self.timer.cancel()
        code = 124 if self.timed_out else status
        answer = {"ok": True, "exitCode": code, "timedOut": self.timed_out, "truncated": self.truncated}
        self.conn.answer(answer)

    def detach(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.child.owner = Owner()
        self.child.kill(signal.SIGKILL)
        self.child.resume()


def op_exec(agent: Agent, conn: Conn, req: Json) -> None:
    cmd = want_str(req, "cmd", limit=65536)
    assert cmd is not None
    args, envs = want_args(req), want_envs(req)
    cwd = want_str(req, "cwd", optional=True)
    timeout = want_seconds(req, "timeout")
    user = want_str(req, "user", limit=256, optional=True)
    limit = None if req.get("outputLimit") is None else want_int(req, "outputLimit", 0, 1 << 40)
    stdin = want_str(req, "stdin", limit=MAX_PAYLOAD, optional=True)
    try:
        child = spawn(agent, cmd, args, envs, cwd, None, stdin is not None, user)
    except LaunchError as exc:
        conn.send(T_STDERR, f"corral: {exc}\n".encode(errors="surrogateescape"))
        conn.answer({"ok": True, "exitCode": exc.status, "timedOut": False})
        return
    if stdin is not None:
        child.write_stdin(stdin.encode(errors="surrogateescape"))
        child.close_stdin()
    conn.op = ExecOp(conn, child, timeout, limit)


# --------------------------------------------------------------------- sessions


class Scrollback:
    """The last SCROLLBACK bytes of output as (stream, bytes) chunks."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, bytearray]] = []
        self.head = 0
        self.size = 0

    def add(self, stream: int, data: bytes) -> None:
        chunks = self.chunks
        if len(chunks) > self.head and chunks[-1][0] == stream and len(chunks[-1][1]) < 32768:
            chunks[-1][1].extend(data)
        else:
            chunks.append((stream, bytearray(data)))
        self.size += len(data)
        while self.size > SCROLLBACK:
            first = chunks[self.head][1]
            excess = self.size - SCROLLBACK
            if len(first) <= excess:
                self.head += 1
                self.size -= len(first)
            else:
                del first[:excess]
                self.size -= excess
        if self.head > 64 and self.head * 2 > len(chunks):
            del chunks[: self.head]
            self.head = 0

    def replay(self, conn: Conn) -> None:
        for stream, data in self.chunks[self.head :]:
            conn.send(stream, bytes(data))


def args_view(args: list[str], budget: int) -> list[str]:
    """The leading args whose JSON fits in ``budget`` bytes."""
    shown: list[str] = []
    for arg in args:
        budget -= len(arg) + 8
        if budget < 0:
            break
        shown.append(arg)
    return shown


class Session(Owner):
    """A process kept with scrollback, any number of attached connections, and an
    exit status once it is done."""

    def __init__(self, agent: Agent, sid: str, cmd: str, args: list[str], pty: bool) -> None:
        self.agent, self.sid, self.cmd, self.args, self.pty = agent, sid, cmd, args, pty
        self.started_at = time.time()
        self.child: Child | None = None
        self.exit_code: int | None = None
        self.clients: list[Conn] = []
        self.scrollback = Scrollback()
        self.timers: list[Timer] = []
        self.idle_limit: float | None = None
        self.idle_timer: Timer | None = None
        self.held = False  # holdOutput: paused, not dropped, until the first attach

    def info(self, args_budget: int = 256 << 10) -> Json:
        return {
            "id": self.sid,
            "cmd": self.cmd,
            "args": args_view(self.args, args_budget),
            "running": self.exit_code is None,
            "exitCode": self.exit_code,
            "startedAt": self.started_at,
            "attachedClients": len(self.clients),
            "pty": self.pty,
        }

    def start(self, child: Child, timeout: float | None, idle_limit: float | None) -> None:
        self.child = child
        child.owner = self
        if timeout:
            self.timers.append(self.agent.loop.call_later(timeout, self.kill_hard))
        self.idle_limit = idle_limit
        self.check_idle()

    def kill_hard(self) -> None:
        self.kill(signal.SIGKILL)

    def kill(self, sig: int) -> None:
        if self.child is not None and self.exit_code is None:
            self.child.kill(sig)

    def check_idle(self) -> None:
        """(Re)arm the maxRunAfterDisconnect timer while no client is attached."""
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        if self.idle_limit and not self.clients and self.exit_code is None:
            self.idle_timer = self.agent.loop.call_later(self.idle_limit, self.kill_hard)

    # ---- clients
    def attach(self, conn: Conn) -> None:
        self.held = False
        if self.exit_code is not None:
            conn.send_json({"ok": True, "session": self.info()})
            self.scrollback.replay(conn)
            conn.send(T_SCROLLBACK_END)
            conn.send(T_EXIT, self.exit_code.to_bytes(4, "big", signed=True))
            conn.close()
            return
        self.clients.append(conn)
        conn.send_json({"ok": True, "session": self.info()})
        self.scrollback.replay(conn)
        conn.send(T_SCROLLBACK_END)
        conn.op = AttachOp(conn, self)
        conn.on_drain = self.maybe_resume
        self.check_idle()
        if conn.buffered() >= HIGH_WATER and self.child is not None:
            self.child.pause()
        else:
            self.maybe_resume()  # a held session's output flows again

    def detach(self, conn: Conn) -> None:
        if conn in self.clients:
            self.clients.remove(conn)
            self.maybe_resume()
            self.check_idle()

    def maybe_resume(self) -> None:
        if self.child is not None and all(c.buffered() < HIGH_WATER for c in self.clients):
            self.child.resume()

    def stdin_drained(self) -> None:
        for conn in list(self.clients):
            conn.resume_reading()

    # ---- Owner
    def output(self, stream: int, data: bytes) -> None:
        self.scrollback.add(stream, data)
        full = self.held and self.scrollback.size >= SCROLLBACK - 2 * READ_CHUNK  # none dropped yet
        for conn in self.clients:
            conn.send(stream, data)
            full = full or conn.buffered() >= HIGH_WATER
        if full and self.child is not None:
            self.child.pause()

    def finished(self, status: int) -> None:
        self.exit_code = status
        for timer in self.timers:
            timer.cancel()
        self.check_idle()
        clients, self.clients = self.clients, []
        for conn in clients:
            conn.op = None
            conn.send(T_EXIT, status.to_bytes(4, "big", signed=True))
            conn.close()
        self.agent.retire(self)


class AttachOp(Op):
    """``session.attach`` after the replay: STDIN, EOF and resize from the host."""

    def __init__(self, conn: Conn, session: Session) -> None:
        self.conn, self.session = conn, session

    def frame(self, ftype: int, payload: bytes) -> None:
        child = self.session.child
        if ftype == T_STDIN:
            if child is not None and self.session.exit_code is None:
                child.write_stdin(payload)
                if child.stdin_full():
                    self.conn.pause_reading()
        elif ftype == T_EOF:
            if child is not None:
                child.close_stdin()
        elif ftype == T_JSON:
            req = loads_object(payload)
            if req.get("op") != "resize":
                raise OpError("invalid", "only resize is accepted while attached")
            resize(self.session, req)
        else:
            super().frame(ftype, payload)

    def detach(self) -> None:
        self.session.detach(self.conn)


def resize(session: Session, req: Json) -> None:
    cols, rows = want_int(req, "cols", 1, 65535), want_int(req, "rows", 1, 65535)
    if not session.pty:
        raise OpError("invalid", "session has no terminal")
    child = session.child
    if child is not None and child.stdin_fd is not None:
        try:
            set_winsize(child.stdin_fd, cols, rows)
        except OSError as exc:
            raise os_error(exc, "resize") from None


def want_session(agent: Agent, req: Json) -> Session:
    sid = want_str(req, "id", limit=256)
    session = agent.sessions.get(sid or "")
    if session is None:
        raise OpError("not_found", f"no session {sid!r}")
    return session


def op_session_start(agent: Agent, conn: Conn, req: Json) -> None:
    sid = want_str(req, "id", limit=256)
    cmd = want_str(req, "cmd", limit=65536)
    assert sid is not None and cmd is not None
    if not sid.isprintable():
        raise OpError("invalid", "id: must be printable")
    args, envs = want_args(req), want_envs(req)
    cwd = want_str(req, "cwd", optional=True)
    user = want_str(req, "user", limit=256, optional=True)
    timeout = want_seconds(req, "timeout")
    idle_limit = want_seconds(req, "maxRunAfterDisconnect")
    pty_req = req.get("pty")
    pty: tuple[int, int] | None = None
    if pty_req is not None:
        if not isinstance(pty_req, dict):
            raise OpError("invalid", "pty: expected {cols, rows}")
        pty = (want_int(pty_req, "cols", 1, 65535), want_int(pty_req, "rows", 1, 65535))
    if sid in agent.sessions:
        raise OpError("exists", f"session {sid!r} exists")
    session = Session(agent, sid, cmd, args, pty is not None)
    session.held = req.get("holdOutput") is True
    agent.sessions[sid] = session
    try:
        child = spawn(agent, cmd, args, envs, cwd, pty, True, user)
    except LaunchError as exc:
        message = f"corral: {exc}\n".encode(errors="surrogateescape")
        session.output(T_STDOUT if pty else T_STDERR, message)
        session.finished(exc.status)
    except BaseException:
        del agent.sessions[sid]
        raise
    else:
        session.start(child, timeout, idle_limit)
    conn.answer({"ok": True, "session": session.info()})


def op_session_list(agent: Agent, conn: Conn, req: Json) -> None:
    args_budget = max(1024, ANSWER_BUDGET // max(1, len(agent.sessions)) - 300)
    parts: list[bytes] = []
    size = 0
    for session in agent.sessions.values():
        part = dumps(session.info(args_budget))
        size += len(part) + 1
        if size > ANSWER_BUDGET:
            list_answer(conn, "sessions", parts, True)
            return
        parts.append(part)
    list_answer(conn, "sessions", parts, False)


def op_session_get(agent: Agent, conn: Conn, req: Json) -> None:
    conn.answer({"ok": True, "session": want_session(agent, req).info()})


def op_session_attach(agent: Agent, conn: Conn, req: Json) -> None:
    want_session(agent, req).attach(conn)


def op_session_kill(agent: Agent, conn: Conn, req: Json) -> None:
    session = want_session(agent, req)
    sig = req.get("signal", 9)
    if isinstance(sig, bool) or not isinstance(sig, int) or not 1 <= sig <= 64:
        raise OpError("invalid", "signal: expected an integer in [1, 64]")
    session.kill(sig)
    conn.answer({"ok": True})


def op_session_resize(agent: Agent, conn: Conn, req: Json) -> None:
    resize(want_session(agent, req), req)
    conn.answer({"ok": True})


# ------------------------------------------------------------------------ files


def entry(path: str, st: os.stat_result) -> Json:
    kind = st.st_mode & S_IFMT
    return {
        "name": os.path.basename(path.rstrip("/")) or "/",
        "path": path,
        "isDir": kind == S_IFDIR,
        "size": st.st_size,
        "mode": st.st_mode & 0o7777,
        "mtime": st.st_mtime,
        "isSymlink": kind == S_IFLNK,
    }


class ReadOp(Op):
    """``file.read``: DATA frames while the host keeps up, then EOF. With a ``length``
    (see ``op_file_read``) exactly that many bytes are sent: a file that grows meanwhile
    is cut there, one that shrinks fails the read (``io``) instead of ending short."""

    def __init__(self, conn: Conn, path: str, fd: int, length: int | None) -> None:
        self.conn, self.path, self.fd = conn, path, fd
        self.left = length
        conn.on_drain = self.pump

    def pump(self) -> None:
        conn, sent = self.conn, 0
        while conn.buffered() < HIGH_WATER and self.fd >= 0 and not conn.closing:
            if sent >= 4 * HIGH_WATER:  # let other connections run
                conn.loop.call_later(0, self.pump)
                return
            want = DATA_CHUNK if self.left is None else min(DATA_CHUNK, self.left)
            try:
                data = os.read(self.fd, want) if want else b""
            except OSError as exc:
                conn.fail(os_error(exc, self.path))
                return
            if not data:
                if self.left:
                    conn.fail(OpError("io", f"{self.path}: the file shrank during the read"))
                    return
                self.detach()
                conn.op = None
                conn.send(T_EOF)
                conn.close()
                return
            conn.send(T_DATA, data)
            sent += len(data)
            if self.left is not None:
                self.left -= len(data)

    def detach(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def regular_file(path: str, st: os.stat_result) -> None:
    """OpError unless ``st`` is a regular file's."""
    if st.st_mode & S_IFMT == S_IFDIR:
        raise OpError("is_dir", f"{path}: Is a directory")
    if st.st_mode & S_IFMT != S_IFREG:
        raise OpError("invalid", f"{path}: not a regular file")


def op_file_read(agent: Agent, conn: Conn, req: Json) -> None:
    """Answer ``{ok, size, length}`` then stream. ``length`` is the number of bytes the
    read sends when the file can say (its size, for a file whose blocks hold data),
    null for pseudo files whose size is not their content (procfs, sysfs) and files
    that are all holes. Only regular files are read: anything else (a device, a FIFO,
    a socket) is refused before it is opened, and again after, should it have been
    swapped in between."""
    path = want_path(req)
    try:
        regular_file(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc, path) from None
    try:
        st = os.fstat(fd)
        regular_file(path, st)
    except BaseException:
        os.close(fd)
        raise
    length = st.st_size if st.st_size > 0 and st.st_blocks > 0 else None
    op = ReadOp(conn, path, fd, length)
    conn.op = op
    conn.send_json({"ok": True, "size": st.st_size, "length": length})
    op.pump()


class WriteOp(Op):
    """``file.write``: DATA frames into a temp file beside the target, renamed at EOF.
    With ``owner`` (a uid, also the gid) the file and the directories made for it are
    that user's."""

    serial = 0  # makes temp names unique within this agent

    def __init__(self, conn: Conn, path: str, mode: int, owner: int | None = None) -> None:
        self.conn, self.path, self.mode, self.owner = conn, path, mode, owner
        self.written = 0
        self.renamed = False
        self.fd = -1
        parent, name = os.path.split(path)
        try:
            if not name or os.path.isdir(path):
                raise OpError("is_dir", f"{path}: Is a directory")
            missing = []
            top = parent
            while top != "/" and not os.path.lexists(top):
                missing.append(top)
                top = os.path.dirname(top)
            os.makedirs(parent, exist_ok=True)
            if owner is not None:
                for made in missing:
                    os.lchown(made, owner, owner)
        except FileExistsError:
            raise OpError("not_dir", f"{parent}: Not a directory") from None
        except OSError as exc:
            raise os_error(exc, parent) from None
        WriteOp.serial += 1
        self.temp = os.path.join(parent, f".{name[:100]}.corral-{os.getpid()}-{WriteOp.serial}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            self.fd = os.open(self.temp, flags, 0o600)
        except OSError as exc:
            raise os_error(exc, path) from None

    def frame(self, ftype: int, payload: bytes) -> None:
        try:
            if ftype == T_DATA:
                view = memoryview(payload)
                while view:
                    view = view[os.write(self.fd, view) :]
                self.written += len(payload)
                return
            if ftype != T_EOF:
                super().frame(ftype, payload)
            os.fchmod(self.fd, self.mode)
            if self.owner is not None:
                os.fchown(self.fd, self.owner, self.owner)
            os.close(self.fd)
            self.fd = -1
            os.rename(self.temp, self.path)
            self.renamed = True
        except OSError as exc:
            raise os_error(exc, self.path) from None
        self.conn.answer({"ok": True, "written": self.written})

    def detach(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if not self.renamed:
            try:
                os.unlink(self.temp)
            except OSError:
                pass


def op_file_write(agent: Agent, conn: Conn, req: Json) -> None:
    path = want_path(req)
    mode = 0o644 if req.get("mode") is None else want_int(req, "mode", 0, 0o7777)
    owner = None if req.get("owner") is None else want_int(req, "owner", 0, 0xFFFFFFFE)
    conn.op = WriteOp(conn, path, mode, owner)


def op_file_list(agent: Agent, conn: Conn, req: Json) -> None:
    """``{ok, truncated, next, entries}``: the entries of ``path`` in name order (code
    points), those after the name ``after`` if given, at most ``limit`` (default and
    most: LIST_LIMIT) and no more than fit one answer. ``next`` is the name to give as
    ``after`` for the rest, null when there is no rest (``truncated`` is then false)."""
    import heapq

    path = want_path(req)
    after = want_str(req, "after", optional=True)
    limit = LIST_LIMIT if req.get("limit") is None else want_int(req, "limit", 1, LIST_LIMIT)
    try:
        with os.scandir(path) as it:
            wanted = (item for item in it if after is None or item.name > after)
            items = heapq.nsmallest(limit + 1, wanted, key=lambda item: item.name)
    except OSError as exc:
        raise os_error(exc, path) from None
    parts: list[bytes] = []
    size, last, more = 0, None, len(items) > limit
    for item in items[:limit]:
        try:
            st = item.stat(follow_symlinks=False)
        except OSError:  # gone since the scan
            last = item.name
            continue
        part = dumps(entry(os.path.join(path, item.name), st))
        size += len(part) + 1
        if size > ANSWER_BUDGET:
            more = True
            break
        parts.append(part)
        last = item.name
    following = dumps(last if more else None)
    body = b'{"ok":true,"truncated":%s,"next":%s,"entries":[%s]}' % (
        b"true" if more else b"false",
        following,
        b",".join(parts),
    )
    conn.op = None
    conn.send(T_JSON, body)
    conn.close()


def list_answer(conn: Conn, key: str, parts: list[bytes], truncated: bool) -> None:
    """Answer ``{ok, truncated, key: [parts]}`` from pre-encoded items."""
    flag = b"true" if truncated else b"false"
    body = b'{"ok":true,"truncated":%s,"%s":[%s]}' % (flag, key.encode(), b",".join(parts))
    conn.op = None
    conn.send(T_JSON, body)
    conn.close()


def op_file_stat(agent: Agent, conn: Conn, req: Json) -> None:
    path = want_path(req)
    try:
        found: Json | None = entry(path, os.lstat(path))
    except (FileNotFoundError, NotADirectoryError):
        found = None
    except OSError as exc:
        raise os_error(exc, path) from None
    conn.answer({"ok": True, "entry": found})


def op_file_mkdir(agent: Agent, conn: Conn, req: Json) -> None:
    path = want_path(req)
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError:
        raise OpError("exists", f"{path}: exists and is not a directory") from None
    except OSError as exc:
        raise os_error(exc, path) from None
    conn.answer({"ok": True})


def remove_tree(path: str) -> None:
    """rm -rf of ``path`` itself: a symlink is unlinked, never followed."""
    st = os.lstat(path)
    if st.st_mode & S_IFMT == S_IFDIR:
        import shutil

        shutil.rmtree(path)
    else:
        os.unlink(path)


def op_file_remove(agent: Agent, conn: Conn, req: Json) -> None:
    path = want_path(req)
    if not os.path.normpath(path).strip("/"):
        raise OpError("invalid", "refusing to remove /")

    def done(error: BaseException | None) -> None:
        if conn.closed:
            return
        if error is None:
            conn.answer({"ok": True})
        elif isinstance(error, OSError):
            conn.fail(os_error(error, path))
        else:
            conn.fail(OpError("internal", repr(error)))

    conn.op = Op()  # further frames are a protocol error; the work runs on
    agent.offload(lambda: remove_tree(path), done)


IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO = 0x8, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_Q_OVERFLOW = 0x100, 0x200, 0x400, 0x8000, 0x4000
IN_ISDIR, IN_ONLYDIR, IN_DONT_FOLLOW = 0x40000000, 0x1000000, 0x2000000
WATCH_MASK = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
WATCH_DIRS = 4096  # directories of one watch, at most
WATCH_EVENT_KINDS = (
    (IN_CREATE | IN_MOVED_TO, "created"),
    (IN_DELETE | IN_MOVED_FROM, "deleted"),
    (IN_CLOSE_WRITE, "modified"),  # once a writer closes, not per write
)


def is_temp(name: str) -> bool:
    """A temp file of ``file.write`` (``WriteOp``): its rename is the change."""
    return name.startswith(".") and name.endswith(".tmp") and ".corral-" in name


class WatchOp(Op):
    """``file.watch``: a directory tree watched with inotify until the host closes.
    Each change is a JSON frame ``{ok, event: {path, type}}`` (created, modified, deleted;
    new directories are watched too). While the host does not keep up (its unsent
    frames over HIGH_WATER), events are dropped and the next frame says how many
    (``dropped``): the agent never buffers without bound."""

    def __init__(self, conn: Conn, root: str) -> None:
        import ctypes

        self.conn = conn
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise os_error(OSError(ctypes.get_errno(), "inotify_init1"), root)
        self.dirs: dict[int, str] = {}
        self.dropped = 0
        try:
            self.add_tree(root)
        except BaseException:
            os.close(self.fd)
            raise
        conn.loop.watch(self.fd, EPOLLIN, self.on_events)

    def add(self, path: str) -> None:
        import ctypes

        if len(self.dirs) >= WATCH_DIRS:
            return
        mask = WATCH_MASK | IN_ONLYDIR | IN_DONT_FOLLOW
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise os_error(OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno())), path)
        self.dirs[wd] = path

    def add_tree(self, root: str, found: list[str] | None = None) -> None:
        """Watch ``root`` and the directories under it; with ``found``, the paths
        already in it are added there (a new directory's entries made before its watch
        was: they are reported as created)."""
        self.add(root)
        for top, dirs, files in os.walk(root):
            if found is not None:
                found += (os.path.join(top, name) for name in (*dirs, *files) if not is_temp(name))
            for name in dirs:
                try:
                    self.add(os.path.join(top, name))
                except OpError:
                    pass  # gone since, or not readable: not watched

    def on_events(self, fd: int, events: int) -> None:
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return
        pos = 0
        while pos + 16 <= len(data):
            wd, mask, _cookie, size = (
                int.from_bytes(data[pos + i : pos + i + 4], sys.byteorder) for i in (0, 4, 8, 12)
            )
            name = os.fsdecode(data[pos + 16 : pos + 16 + size].rstrip(b"\0"))
            pos += 16 + size
            top = self.dirs.get(wd)
            if mask & IN_IGNORED:
                self.dirs.pop(wd, None)
            if top is None or not name or mask & IN_Q_OVERFLOW or is_temp(name):
                continue
            path = os.path.join(top, name)
            found: list[str] = []
            if mask & (IN_CREATE | IN_MOVED_TO) and mask & IN_ISDIR:
                try:
                    self.add_tree(path, found)
                except OpError:
                    pass
            for bits, kind in WATCH_EVENT_KINDS:
                if mask & bits:
                    self.emit(path, kind)
                    break
            for inside in found:  # made before the new directory's watch: never seen
                self.emit(inside, "created")

    def emit(self, path: str, kind: str) -> None:
        if self.conn.buffered() >= HIGH_WATER:
            self.dropped += 1
            return
        event: Json = {"path": path, "type": kind}
        if self.dropped:
            event["dropped"], self.dropped = self.dropped, 0
        self.conn.send_json({"ok": True, "event": event})

    def detach(self) -> None:
        close_fd(self.conn.loop, self.fd)


def op_file_watch(agent: Agent, conn: Conn, req: Json) -> None:
    path = want_path(req)
    try:
        if os.stat(path).st_mode & S_IFMT != S_IFDIR:
            raise OpError("not_dir", f"{path}: not a directory")
    except OSError as exc:
        raise os_error(exc, path) from None
    op = WatchOp(conn, path)
    conn.send_json({"ok": True})
    conn.op = op


# -------------------------------------------------------------------- the rest


def op_ping(agent: Agent, conn: Conn, req: Json) -> None:
    conn.answer({"ok": True, "version": VERSION, "pid": os.getpid()})


def listening_ports() -> list[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, "rb") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == b"0A":
                ports.add(int(fields[1].rpartition(b":")[2], 16))
    return sorted(ports)


def op_ports(agent: Agent, conn: Conn, req: Json) -> None:
    conn.answer({"ok": True, "ports": listening_ports()})


def op_disk(agent: Agent, conn: Conn, req: Json) -> None:
    """Bytes of the sandbox's root filesystem (its disk) in use, and in all: what it uses
    and what it may still use (a disk made larger than its limit, a standby's, keeps the
    rest as a reserve nobody may use, so its size is not the limit)."""
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    conn.answer({"ok": True, "total": used + st.f_bavail * st.f_frsize, "used": used})


def op_env_set(agent: Agent, conn: Conn, req: Json) -> None:
    """The sandbox's own envs, given after start (a sandbox started ahead of its
    create): every later command gets them, as if they had been in the agent's
    environment from the start."""
    agent.base_env.update(want_envs(req))
    conn.answer({"ok": True})


def op_shutdown(agent: Agent, conn: Conn, req: Json) -> None:
    conn.answer({"ok": True})
    agent.exit_now()


OPS: dict[str, Callable[[Agent, Conn, Json], None]] = {
    "ping": op_ping,
    "exec": op_exec,
    "session.start": op_session_start,
    "session.list": op_session_list,
    "session.get": op_session_get,
    "session.attach": op_session_attach,
    "session.kill": op_session_kill,
    "session.resize": op_session_resize,
    "file.read": op_file_read,
    "file.write": op_file_write,
    "file.list": op_file_list,
    "file.stat": op_file_stat,
    "file.mkdir": op_file_mkdir,
    "file.remove": op_file_remove,
    "file.watch": op_file_watch,
    "ports": op_ports,
    "disk": op_disk,
    "env.set": op_env_set,
    "shutdown": op_shutdown,
}


class Agent:
    """The process: listener, signals, children, sessions."""

    def __init__(self, listener: _socket.socket, user: str | None = None) -> None:
        self.loop = Loop()
        self.user = user  # commands run as this user (a Dockerfile's USER); None: root
        self.listener = listener
        self.conns: set[Conn] = set()
        self.children: dict[int, Child] = {}
        self.sessions: dict[str, Session] = {}
        self.exited: list[Session] = []
        self.completed: list[tuple[Callable[[BaseException | None], None], BaseException | None]]
        self.completed = []
        self.terminating = False
        self.base_env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        self.base_env.update(os.environ)
        if user is not None and self.base_env.get("HOME") == "/root":
            try:
                self.base_env["HOME"] = user_ids(user)[3]
            except LaunchError:
                pass  # reported by every command instead
        self.home_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, _on_signal)
        listener.setblocking(False)
        self.loop.watch(self.wake_r, EPOLLIN, self.on_wake)
        self.loop.watch(listener.fileno(), EPOLLIN, self.on_accept)
        if compiled_here():
            self.loop.call_later(1.0, release_memory)

    def crashed(self, exc: Exception) -> None:
        pass

    def on_accept(self, fd: int, events: int) -> None:
        for _ in range(16):
            try:
                conn_fd, _addr = self.listener._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log(f"accept: {exc}")
                self.loop.watch(fd, 0, _ignore)
                self.loop.call_later(0.1, self.accept_again)
                return
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, conn_fd)
            sock.setblocking(False)
            self.conns.add(Conn(self, sock))

    def accept_again(self) -> None:
        if not self.terminating:
            self.loop.watch(self.listener.fileno(), EPOLLIN, self.on_accept)

    def on_wake(self, fd: int, events: int) -> None:
        try:
            signals = os.read(self.wake_r, 512)
        except OSError:
            return
        self.reap()  # on every wake: cheap, and immune to lost SIGCHLD bytes
        if signal.SIGTERM in signals or signal.SIGINT in signals or signal.SIGHUP in signals:
            self.terminate()
        while self.completed:
            done, error = self.completed.pop(0)
            guarded(done, error)  # type: ignore[arg-type]

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            code = os.waitstatus_to_exitcode(status)
            child = self.children.pop(pid, None)
            if child is not None:
                guarded(child.reaped, code if code >= 0 else 128 - code)
        if self.terminating and not self.children:
            self.exit_now()

    def retire(self, session: Session) -> None:
        """Keep the last EXITED_KEPT exited sessions for late attaches."""
        self.exited.append(session)
        while len(self.exited) > EXITED_KEPT:
            old = self.exited.pop(0)
            if self.sessions.get(old.sid) is old:
                del self.sessions[old.sid]

    def offload(self, work: Callable[[], None], done: Callable[[BaseException | None], None]) -> None:
        """Run blocking ``work`` on a thread; ``done(error)`` runs on the loop."""
        import threading

        def run() -> None:
            error: BaseException | None = None
            try:
                work()
            except BaseException as exc:  # noqa: BLE001 -- handed to done()
                error = exc
            self.completed.append((done, error))
            try:
                os.write(self.wake_w, b"\0")
            except OSError:
                pass

        threading.Thread(target=run, daemon=True).start()

    def terminate(self) -> None:
        """SIGTERM: ask every process to end, kill what is left after 2 s (or at a
        second SIGTERM), exit."""
        if self.terminating:
            self.exit_now()
        self.terminating = True
        self.loop.watch(self.listener.fileno(), 0, _ignore)
        self.signal_all(signal.SIGTERM)
        self.loop.call_later(2.0, self.exit_now)
        if not self.children:
            self.exit_now()

    def signal_all(self, sig: int) -> None:
        for child in list(self.children.values()):
            child.kill(sig)
        for session in self.sessions.values():
            session.kill(sig)
        if os.getpid() == 1:  # everything else in the sandbox, never the host's
            try:
                os.kill(-1, sig)
            except OSError:
                pass

    def exit_now(self) -> None:
        self.signal_all(signal.SIGKILL)
        for conn in list(self.conns):  # last answers (shutdown's ok) are tiny
            if conn.out:
                conn.write()
        os._exit(0)


SHIELD_GID = 65534  # the agent's saved gid (nogroup): never used, only never matched


def shield() -> None:
    """Keep the code this agent runs out of the agent (docs/security.md, "The agent
    boundary"). Commands are the agent's children, root of the same user namespace
    like the agent; by ids alone they could ptrace it, take its fds with pidfd_getfd
    (the listening socket), read its memory and environment, or set its rlimits. Two
    kernel rules keep them out; neither can be undone without a capability no sandbox
    process has (CAP_SYS_PTRACE, CAP_SYS_RESOURCE):

    * the agent is not dumpable (``prctl(PR_SET_DUMPABLE, 0)``), so ptrace access to it
      needs CAP_SYS_PTRACE; its children are dumpable again from their ``execve``;
    * its saved gid differs from its real gid, so no process has ids equal to all of its
      ids, which both ptrace and prlimit of another process require otherwise. The agent
      never changes ids, and a child's saved gid is its gid again from its ``execve``.

    Runs first, before anything of the sandbox can run; either step that fails is logged
    and the other still holds."""
    try:
        _not_dumpable()
    except (ImportError, AttributeError, TypeError, OSError) as exc:
        log(f"cannot make the agent non-dumpable: {exc}")
    gid = os.getgid()
    if os.geteuid() == 0 and gid != SHIELD_GID:
        try:
            os.setresgid(gid, os.getegid(), SHIELD_GID)
        except OSError as exc:
            log(f"cannot set the agent's saved gid: {exc}")


def _not_dumpable() -> None:
    """``prctl(PR_SET_DUMPABLE, 0)``."""
    if _libc_function("prctl")(4, 0, 0, 0, 0) != 0:  # 4: PR_SET_DUMPABLE
        import _ctypes

        raise OSError(_ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _libc_function(name: str) -> Callable[..., int]:
    """The C library's ``name``, taking unsigned longs and returning an int, through
    ``_ctypes``, the C half of ctypes: importing ctypes itself costs ~3 ms of CPU and
    ~0.25 MB per agent, this ~0.5 ms."""
    import _ctypes

    class Int(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "i"

    class ULong(_ctypes._SimpleCData):  # type: ignore[type-arg]
        _type_ = "L"

    class Function(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = Int

    class Libc:
        _handle = _ctypes.dlopen(None, os.RTLD_NOW)  # type: ignore[arg-type]  # the program

    function = Function((name, Libc()))  # type: ignore[arg-type]  # any object with a _handle
    return lambda *args: int(function(*(ULong(a) for a in args)))


def compiled_here() -> bool:
    """Whether this interpreter compiled the agent from source (``python3 agent.py``,
    the ``-c`` form of ``wire.agent_argv``), rather than loading the bytecode the host
    compiled for it (``runtime/agentfile.py``: ``__loader__`` is then CPython's
    SourcelessFileLoader)."""
    return type(globals().get("__loader__")).__name__ != "SourcelessFileLoader"


def release_memory() -> None:
    """Return to the kernel the ~3.7 MB of C heap that compiling this file left free
    (glibc keeps it otherwise). Runs once, after start-up, off the critical path, and
    only in an agent that compiled itself: loaded as bytecode it has no such heap."""
    try:
        _libc_function("malloc_trim")(0)
    except (ImportError, OSError, AttributeError):
        pass


def _on_signal(signum: int, frame: object) -> None:
    """Handled on the loop through the wakeup fd."""


def listen(argv: list[str]) -> _socket.socket:
    if len(argv) == 2 and argv[0] == "--listen-fd" and argv[1].isdigit():
        fd = int(argv[1])
        os.set_inheritable(fd, False)
        return _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
    if len(argv) == 2 and argv[0] == "--socket":
        # Bound under a temporary name and renamed once listening, so the path never
        # refuses a connection; through /proc/self/fd so the path may be longer than
        # a unix socket address (107 bytes).
        directory, name = os.path.split(os.path.abspath(argv[1]))
        temp = f".{name}.{os.getpid()}.tmp"
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            sock.bind(f"/proc/self/fd/{dir_fd}/{temp}")
            os.chmod(temp, 0o600, dir_fd=dir_fd)
            sock.listen(128)
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        return sock
    sys.stderr.write("usage: agent.py (--listen-fd FD | --socket PATH) [--user USER]\n")
    raise SystemExit(2)


def main() -> None:
    argv, user = sys.argv[1:], None
    if len(argv) >= 2 and argv[-2] == "--user":
        argv, user = argv[:-2], argv[-1]
    shield()
    agent = Agent(listen(argv), user)
    agent.loop.run()


if __name__ == "__main__":
    main()
