"""In-memory fakes of the Runtime, Agent and Snapshotter ports: sandboxes without
processes, for tests of the layers above the runtime (services, API) that need no real
agent. Nothing here starts a process or touches a file, except a snapshot, which is one
JSON file in the directory the caller gives (a checkpoint's, under the data dir).

A sandbox is a ``FakeSandbox``: its files (absolute paths -> bytes; directories), the
envs commands get, its sessions while it runs, the ports tests say it listens on. Its
"disk" is its files: ``hibernate`` ends its sessions and keeps them, ``resume`` starts
it again with none. ``freeze`` marks it frozen (its sessions kept; ``frozen`` is open to
tests) and its agent answers nothing (AgentError) until ``thaw``.

Commands are ``programs``: a name -> a function of the request and the sandbox giving
the result. The defaults are ``true``, ``false``, ``exit CODE``, ``echo ARGS...``,
``cat PATH...`` (relative paths from ``/root``) and ``env`` (``KEY=VALUE`` lines,
sorted); any other name exits 127. A session of a default program that ends runs it
once and ends; any other session (and ``cat`` without arguments) runs until it is killed or its stdin is closed
(exit 0), echoing its stdin to its stdout.

What the fake keeps of the ports' contracts: ids are validated (InvalidInput), create
is Conflict for an id that exists, destroy is idempotent, every call to the agent of a
sandbox that does not run is AgentError (as a refused connection is), file errors are
NotFound / InvalidInput / Conflict as the port says, output is kept as an
``OutputKeeper`` grants.
"""

from __future__ import annotations

import asyncio
import base64
import json
import posixpath
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from corral.domain import (
    DiskUsage,
    EgressPolicy,
    ExecRequest,
    ExecResult,
    FileChange,
    FileEntry,
    Limits,
    RuntimeState,
    SandboxSpec,
    SessionEvent,
    SessionInfo,
    SessionSpec,
    Stream,
)
from corral.domain.usage import Usage
from corral.errors import AgentError, Conflict, Forbidden, InvalidInput, NotFound
from corral.pausepoints import pause
from corral.ports import Agent, FilePage, OutputKeeper, Runtime, Snapshotter
from corral.runtime.layout import valid_id
from corral.runtime.locks import Locks

Program = Callable[[ExecRequest, "FakeSandbox"], ExecResult]
HOME = "/root"
LIST_LIMIT = 1000  # entries of one list_dir answer at most
SNAPSHOT = "files.json"


@dataclass
class FakeSession:
    """A session's process: its scrollback, whether it runs, the queues of its
    attachments (each gets every event from when it attached)."""

    info: SessionInfo
    scrollback: bytearray = field(default_factory=bytearray)
    attached: list[asyncio.Queue[SessionEvent]] = field(default_factory=list)

    def emit(self, event: SessionEvent) -> None:
        if event.stream in (Stream.STDOUT, Stream.STDERR):
            self.scrollback += event.data
        for queue in self.attached:
            queue.put_nowait(event)

    def end(self, exit_code: int) -> None:
        if self.info.running:
            self.info = replace(self.info, running=False, exit_code=exit_code)
            self.emit(SessionEvent(Stream.EXIT, exit_code=exit_code))


@dataclass
class FakeSandbox:
    """One sandbox of a ``FakeRuntime`` (see the module docstring)."""

    spec: SandboxSpec | None
    running: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", HOME, "/tmp"})
    envs: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, FakeSession] = field(default_factory=dict)
    listening: set[int] = field(default_factory=set)
    watchers: list[asyncio.Queue[FileChange]] = field(default_factory=list)
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    cpu_seconds: float = 0.0  # what ``usage`` says it used: tests set it
    frozen: bool = False  # Runtime.freeze: its agent does not answer

    def start(self, spec: SandboxSpec) -> None:
        self.spec, self.running, self.envs, self.egress = spec, True, dict(spec.envs), spec.egress

    def stop(self) -> None:
        """Its processes end; its files stay."""
        for session in self.sessions.values():
            session.end(137)
        self.running, self.sessions, self.listening, self.frozen = False, {}, set(), False

    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def disk(self) -> dict[str, object]:
        """Its files as JSON (a snapshot)."""
        files = {path: base64.b64encode(data).decode() for path, data in self.files.items()}
        return {"files": files, "dirs": sorted(self.dirs)}

    def lay(self, disk: dict[str, object]) -> None:
        """Its files become the snapshot's."""
        files, dirs = disk["files"], disk["dirs"]
        assert isinstance(files, dict) and isinstance(dirs, list)
        self.files = {str(path): base64.b64decode(str(data)) for path, data in files.items()}
        self.dirs = {str(path) for path in dirs}


# ---- programs ------------------------------------------------------------------------


def _ok(stdout: bytes = b"", stderr: bytes = b"", code: int = 0) -> ExecResult:
    return ExecResult(code, stdout, stderr)


def _exit(request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
    return _ok(code=int(request.args[0]) if request.args else 0)


def _echo(request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
    return _ok((" ".join(request.args) + "\n").encode())


def _cat(request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
    out, err = bytearray(), bytearray()
    for arg in request.args:
        path = posixpath.normpath(posixpath.join(request.cwd or HOME, arg))
        if path in sandbox.files:
            out += sandbox.files[path]
        else:
            err += f"cat: {arg}: No such file or directory\n".encode()
    return _ok(bytes(out), bytes(err), 1 if err else 0)


def _env(request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
    envs = {**sandbox.envs, **request.envs}
    return _ok("".join(f"{key}={value}\n" for key, value in sorted(envs.items())).encode())


PROGRAMS: dict[str, Program] = {
    "true": lambda request, sandbox: _ok(),
    "false": lambda request, sandbox: _ok(code=1),
    "exit": _exit,
    "echo": _echo,
    "cat": _cat,
    "env": _env,
}


# ---- the runtime -----------------------------------------------------------------------


class FakeRuntime:
    """The ``Runtime`` port in memory (see the module docstring). ``sandboxes`` is open
    to tests: what a sandbox holds, and what to change behind corral's back."""

    name = "fake"

    def __init__(self, programs: dict[str, Program] | None = None) -> None:
        self.programs = {**PROGRAMS, **(programs or {})}
        self.sandboxes: dict[str, FakeSandbox] = {}
        self.locks = Locks()  # shared with FakeSnapshots

    def _checked(self, sandbox_id: str) -> str:
        if not valid_id(sandbox_id):
            raise InvalidInput(f"invalid sandbox id {sandbox_id!r}", field="id")
        return sandbox_id

    def _found(self, sandbox_id: str) -> FakeSandbox:
        sandbox = self.sandboxes.get(self._checked(sandbox_id))
        if sandbox is None:
            raise NotFound(f"sandbox {sandbox_id} is not on this node")
        return sandbox

    async def create(self, spec: SandboxSpec) -> None:
        async with self.locks.of(self._checked(spec.id)):
            if spec.id in self.sandboxes:
                raise Conflict(f"sandbox {spec.id} already exists on this node")
            sandbox = FakeSandbox(None)
            sandbox.start(spec)
            self.sandboxes[spec.id] = sandbox

    async def destroy(self, sandbox_id: str) -> None:
        async with self.locks.of(self._checked(sandbox_id)):
            sandbox = self.sandboxes.pop(sandbox_id, None)
            if sandbox is not None:
                sandbox.stop()

    async def discard(self, sandbox_id: str) -> None:
        await self.destroy(sandbox_id)

    async def settle(self, timeout: float = 30.0) -> bool:
        return True

    async def state(self, sandbox_id: str) -> RuntimeState:
        sandbox = self.sandboxes.get(self._checked(sandbox_id))
        if sandbox is None:
            return RuntimeState.MISSING
        return RuntimeState.RUNNING if sandbox.running else RuntimeState.STOPPED

    async def list_ids(self) -> set[str]:
        return set(self.sandboxes)

    async def reclaim(self, keep: set[str]) -> list[str]:
        removed = sorted(set(self.sandboxes) - keep)
        for sandbox_id in removed:
            await self.destroy(sandbox_id)
        return removed

    def agent(self, sandbox_id: str) -> Agent:
        return FakeAgent(self, self._checked(sandbox_id))

    async def address(self, sandbox_id: str) -> str:
        self._found(sandbox_id)
        return "127.0.0.1"

    async def set_egress(self, sandbox_id: str, policy: EgressPolicy) -> None:
        self._found(sandbox_id).egress = policy

    async def set_limits(self, sandbox_id: str, limits: Limits) -> None:
        """Its spec's limits become ``limits``; Conflict for more disk than it was made
        with (as on runc)."""
        sandbox = self._found(sandbox_id)
        if not sandbox.running or sandbox.spec is None:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node")
        room = sandbox.spec.disk_room_mb or sandbox.spec.limits.disk_mb
        if limits.disk_mb > room:
            raise Conflict(f"sandbox {sandbox_id} has a disk of {room} MiB; it cannot get {limits.disk_mb}")
        sandbox.spec = replace(sandbox.spec, limits=limits)

    async def usage(self, sandbox_id: str) -> Usage:
        """Its ``cpu_seconds`` and its quota; NotFound when it does not run."""
        sandbox = self._found(sandbox_id)
        if not sandbox.running or sandbox.spec is None:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node")
        return Usage(sandbox.cpu_seconds, cpu_quota_seconds=sandbox.spec.limits.cpu_seconds)

    async def health(self) -> dict[str, object]:
        return {"runtime": self.name, "ok": True}

    async def freeze(self, sandbox_id: str) -> None:
        sandbox = self._found(sandbox_id)
        if not sandbox.running:
            raise NotFound(f"sandbox {sandbox_id} is not running on this node")
        sandbox.frozen = True

    async def thaw(self, sandbox_id: str) -> None:
        sandbox = self.sandboxes.get(self._checked(sandbox_id))
        if sandbox is not None:
            sandbox.frozen = False

    async def hibernate(self, sandbox_id: str) -> int:
        async with self.locks.of(self._checked(sandbox_id)):
            sandbox = self._found(sandbox_id)
            sandbox.stop()
            return sandbox.size()

    async def resume(self, spec: SandboxSpec, *, forked: bool = False) -> None:
        async with self.locks.of(self._checked(spec.id)):
            sandbox = self._found(spec.id)
            sandbox.stop()
            sandbox.start(spec)


class FakeSnapshots:
    """The ``Snapshotter`` port for a ``FakeRuntime``: a snapshot is its files as JSON
    (``files.json`` in the target directory)."""

    def __init__(self, runtime: FakeRuntime) -> None:
        self._rt = runtime

    async def snapshot(self, sandbox_id: str, target: Path) -> int:
        async with self._rt.locks.of(self._rt._checked(sandbox_id)):
            sandbox = self._rt._found(sandbox_id)
            (target / SNAPSHOT).write_text(json.dumps(sandbox.disk()))
            return sandbox.size()

    async def restore(self, sandbox_id: str, source: Path) -> None:
        async with self._rt.locks.of(self._rt._checked(sandbox_id)):
            sandbox = self._rt._found(sandbox_id)
            if sandbox.running:
                raise Conflict(f"sandbox {sandbox_id} is running; hibernate it first")
            sandbox.lay(json.loads((source / SNAPSHOT).read_text()))

    async def fork(self, sandbox_id: str, source: Path) -> None:
        async with self._rt.locks.of(self._rt._checked(sandbox_id)):
            if sandbox_id in self._rt.sandboxes:
                raise Conflict(f"sandbox {sandbox_id} already exists on this node")
            sandbox = FakeSandbox(None)
            sandbox.lay(json.loads((source / SNAPSHOT).read_text()))
            self._rt.sandboxes[sandbox_id] = sandbox
            try:
                await pause("fork.copied")
            except BaseException:
                del self._rt.sandboxes[sandbox_id]
                raise

    async def has_disk(self, sandbox_id: str) -> bool:
        return self._rt._checked(sandbox_id) in self._rt.sandboxes

    async def recover(self, sandbox_id: str) -> None:
        self._rt._checked(sandbox_id)


# ---- the agent -------------------------------------------------------------------------


class FakeAgent:
    """The ``Agent`` port (``Processes`` and ``Files``) of one ``FakeSandbox``."""

    def __init__(self, runtime: FakeRuntime, sandbox_id: str) -> None:
        self._rt = runtime
        self.sandbox_id = sandbox_id

    def _sandbox(self) -> FakeSandbox:
        sandbox = self._rt.sandboxes.get(self.sandbox_id)
        if sandbox is None or not sandbox.running:
            raise AgentError(f"the agent of {self.sandbox_id} does not answer: it is not running")
        if sandbox.frozen:
            raise AgentError(f"the agent of {self.sandbox_id} does not answer: it is frozen")
        return sandbox

    # -- processes

    async def ping(self) -> None:
        self._sandbox()

    async def set_envs(self, envs: dict[str, str]) -> None:
        self._sandbox().envs.update(envs)

    async def exec(self, request: ExecRequest, keep: OutputKeeper | None = None) -> ExecResult:
        sandbox = self._sandbox()
        result = self._run(request, sandbox)
        if keep is None:
            return result
        stdout = result.stdout[: keep.grant(Stream.STDOUT, min(len(result.stdout), keep.limit))]
        stderr = result.stderr[: keep.grant(Stream.STDERR, min(len(result.stderr), keep.limit))]
        truncated = len(stdout) < len(result.stdout) or len(stderr) < len(result.stderr)
        return ExecResult(result.exit_code, stdout, stderr, result.timed_out, truncated)

    def _run(self, request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
        program = self._rt.programs.get(request.cmd)
        if program is None:
            return _ok(stderr=f"{request.cmd}: command not found\n".encode(), code=127)
        return program(request, sandbox)

    async def start_session(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        sandbox = self._sandbox()
        if session_id in sandbox.sessions:
            raise Conflict(f"session {session_id} exists")
        info = SessionInfo(
            session_id, spec.cmd, spec.args, True, None, datetime.now(UTC), 0, pty=spec.pty is not None
        )
        session = FakeSession(info)
        sandbox.sessions[session_id] = session
        if spec.cmd in self._rt.programs and not (spec.cmd == "cat" and not spec.args):
            result = self._run(ExecRequest(spec.cmd, spec.args, spec.envs, spec.cwd), sandbox)
            session.emit(SessionEvent(Stream.STDOUT, result.stdout))
            session.emit(SessionEvent(Stream.STDERR, result.stderr))
            session.end(result.exit_code)
        return session.info

    async def list_sessions(self) -> list[SessionInfo]:
        return [session.info for session in self._sandbox().sessions.values()]

    def _session(self, session_id: str) -> FakeSession:
        session = self._sandbox().sessions.get(session_id)
        if session is None:
            raise NotFound(f"session {session_id} not found")
        return session

    async def session(self, session_id: str) -> SessionInfo:
        return self._session(session_id).info

    def attach(self, session_id: str) -> AbstractAsyncContextManager[FakeAttachment]:
        return self._attach(session_id)

    @asynccontextmanager
    async def _attach(self, session_id: str) -> AsyncIterator[FakeAttachment]:
        session = self._session(session_id)
        queue: asyncio.Queue[SessionEvent] = asyncio.Queue()
        if session.scrollback:
            queue.put_nowait(SessionEvent(Stream.STDOUT, bytes(session.scrollback)))
        queue.put_nowait(SessionEvent(Stream.SCROLLBACK_END))
        if not session.info.running:
            queue.put_nowait(SessionEvent(Stream.EXIT, exit_code=session.info.exit_code))
        session.attached.append(queue)
        session.info = replace(session.info, attached_clients=session.info.attached_clients + 1)
        try:
            yield FakeAttachment(session, queue)
        finally:
            session.attached.remove(queue)
            session.info = replace(session.info, attached_clients=session.info.attached_clients - 1)

    async def kill_session(self, session_id: str, signal: int = 9) -> None:
        self._session(session_id).end(128 + signal)

    async def resize_session(self, session_id: str, cols: int, rows: int) -> None:
        if not self._session(session_id).info.pty:
            raise InvalidInput(f"session {session_id} has no PTY")

    async def ports(self) -> list[int]:
        return sorted(self._sandbox().listening)

    async def disk(self) -> DiskUsage:
        sandbox = self._sandbox()
        return DiskUsage(sandbox.spec.limits.disk_mb << 20 if sandbox.spec else 0, sandbox.size())

    async def shutdown(self) -> None:
        self._sandbox().stop()

    # -- files

    def _path(self, path: str, within: str | None = None) -> str:
        if not path.startswith("/"):
            raise InvalidInput(f"path {path!r} is not absolute", field="path")
        path = posixpath.normpath(path)
        if within is not None and path != within and not path.startswith(within.rstrip("/") + "/"):
            raise Forbidden(f"{path}: leads outside {within}")  # no symlinks here: by name
        return path

    def _changed(self, sandbox: FakeSandbox, path: str, kind: str) -> None:
        for queue in sandbox.watchers:
            queue.put_nowait(FileChange(path, kind))

    def _parent_dir(self, sandbox: FakeSandbox, path: str) -> None:
        """Make the parents of ``path``; InvalidInput where one is a file."""
        parts = path.strip("/").split("/")[:-1]
        current = ""
        for part in parts:
            current += "/" + part
            if current in sandbox.files:
                raise InvalidInput(f"{current} is not a directory", field="path")
            sandbox.dirs.add(current)

    async def read_file(
        self, path: str, *, within: str | None = None
    ) -> AbstractAsyncContextManager[FakeChunks]:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path in sandbox.dirs:
            raise InvalidInput(f"{path} is a directory", field="path")
        if path not in sandbox.files:
            raise NotFound(f"{path} not found", field="path")
        return _chunks(sandbox.files[path])

    async def write_file(
        self,
        path: str,
        chunks: AsyncIterable[bytes],
        mode: int = 0o644,
        *,
        within: str | None = None,
        owner: int | None = None,
    ) -> int:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path in sandbox.dirs:
            raise InvalidInput(f"{path} is a directory", field="path")
        self._parent_dir(sandbox, path)
        data = bytearray()
        async for chunk in chunks:
            data += chunk
        self._changed(sandbox, path, "modified" if path in sandbox.files else "created")
        sandbox.files[path] = bytes(data)
        return len(data)

    async def list_dir(
        self, path: str, after: str | None = None, limit: int | None = None, *, within: str | None = None
    ) -> FilePage:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path in sandbox.files:
            raise InvalidInput(f"{path} is not a directory", field="path")
        if path not in sandbox.dirs:
            raise NotFound(f"{path} not found", field="path")
        names = sorted(
            {p.rsplit("/", 1)[1] for p in [*sandbox.files, *sandbox.dirs] if p != "/" and _parent(p) == path}
        )
        names = [name for name in names if after is None or name > after]
        size = min(limit or LIST_LIMIT, LIST_LIMIT)
        page = names[:size]
        entries = [_entry(sandbox, posixpath.join(path, name)) for name in page]
        return FilePage(entries, page[-1] if len(names) > size else None)

    async def stat(self, path: str, *, within: str | None = None) -> FileEntry | None:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path not in sandbox.files and path not in sandbox.dirs:
            return None
        return _entry(sandbox, path)

    async def mkdir(self, path: str) -> None:
        sandbox, path = self._sandbox(), self._path(path)
        if path in sandbox.files:
            raise Conflict(f"{path} exists and is not a directory", field="path")
        self._parent_dir(sandbox, path + "/x")

    async def remove(self, path: str, *, within: str | None = None) -> None:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path not in sandbox.files and path not in sandbox.dirs:
            raise NotFound(f"{path} not found", field="path")
        prefix = path.rstrip("/") + "/"
        sandbox.files = {p: d for p, d in sandbox.files.items() if p != path and not p.startswith(prefix)}
        sandbox.dirs = {p for p in sandbox.dirs if p != path and not p.startswith(prefix)} | {"/"}
        self._changed(sandbox, path, "deleted")

    def watch(
        self, path: str, *, within: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[FileChange]]:
        return self._watch(path, within)

    @asynccontextmanager
    async def _watch(self, path: str, within: str | None) -> AsyncIterator[AsyncIterator[FileChange]]:
        sandbox, path = self._sandbox(), self._path(path, within)
        if path not in sandbox.dirs:
            raise NotFound(f"{path} not found", field="path")
        queue: asyncio.Queue[FileChange] = asyncio.Queue()
        prefix = path.rstrip("/") + "/"

        async def changes() -> AsyncIterator[FileChange]:
            while True:
                change = await queue.get()
                if change.path.startswith(prefix):
                    yield change

        sandbox.watchers.append(queue)
        try:
            yield changes()
        finally:
            sandbox.watchers.remove(queue)


class FakeAttachment:
    """An ``Attachment`` to a ``FakeSession``: what its stdin gets is echoed to its
    stdout; closing its stdin ends it (exit 0)."""

    def __init__(self, session: FakeSession, queue: asyncio.Queue[SessionEvent]) -> None:
        self._session = session
        self._queue = queue
        self._done = False

    def __aiter__(self) -> AsyncIterator[SessionEvent]:
        return self

    async def __anext__(self) -> SessionEvent:
        if self._done:
            raise StopAsyncIteration
        event = await self._queue.get()
        self._done = event.stream is Stream.EXIT
        return event

    async def send_stdin(self, data: bytes) -> None:
        if self._session.info.running:
            self._session.emit(SessionEvent(Stream.STDOUT, data))

    async def close_stdin(self) -> None:
        if not self._session.info.pty:
            self._session.end(0)

    async def resize(self, cols: int, rows: int) -> None:
        if not self._session.info.pty:
            raise InvalidInput("session has no PTY")


class FakeChunks:
    """A file being read: all of it in one chunk."""

    def __init__(self, data: bytes) -> None:
        self.length: int | None = len(data)
        self._data: bytes | None = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if not self._data:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


@asynccontextmanager
async def _chunks(data: bytes) -> AsyncIterator[FakeChunks]:
    yield FakeChunks(data)


def _parent(path: str) -> str:
    return posixpath.dirname(path) or "/"


def _entry(sandbox: FakeSandbox, path: str) -> FileEntry:
    name = path.rsplit("/", 1)[1] or "/"
    if path in sandbox.dirs:
        return FileEntry(name, path, True, 0, 0o40755, time.time())
    return FileEntry(name, path, False, len(sandbox.files[path]), 0o100644, time.time())


# mypy holds the fakes to the ports they stand for (a port that grows fails here)
_PORTS: tuple[type[Runtime], type[Snapshotter], type[Agent]] = (FakeRuntime, FakeSnapshots, FakeAgent)
