"""envd's ``filesystem`` service (Connect RPC, the ``e2b`` SDK's ``files``) over
corral's file service and the agent's file watch.

- Paths: relative ones from the call's user's home (``caller.User.path``).
- ``Stat``, ``ListDir`` (``depth`` levels, 1 when 0; symlinks are listed, not
  followed; at most ``LIST_MAX`` entries, else resource_exhausted), ``Remove``: the
  file service's. ``MakeDir``: already_exists for an existing path (the SDK's
  ``make_dir`` answers False), else ``mkdir -p`` run as the call's user, so the user
  owns what it made (envd's behaviour). ``Move``: ``mv -T`` run as the user (the agent
  has no rename of its own; paths are arguments, never a shell's).
- ``WatchDir`` streams a ``start`` event, then a ``filesystem`` event per change
  (``name`` relative to the watched directory; created CREATE, modified WRITE, deleted
  REMOVE), ``keepalive`` when idle; without ``recursive`` only changes directly in the
  directory. ``CreateWatcher`` starts the same watch in the background, keeping at most
  ``WATCHER_EVENTS`` events until ``GetWatcherEvents`` takes them (older ones are
  dropped), until ``RemoveWatcher``; a server holds at most ``MAX_WATCHERS``
  (resource_exhausted beyond). Watchers live in this process's memory.
- Owner and group of an entry are not known to the agent: they are "".
"""

from __future__ import annotations

import asyncio
import posixpath
import secrets
import stat as stats
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from e2b.envd.filesystem import filesystem_pb as pb
from e2b.envd.filesystem.filesystem_connect import Filesystem
from protobuf import Oneof
from protobuf.wkt import Timestamp

from corral.api.e2b.caller import Caller, Callers, Context, User
from corral.api.e2b.errors import connect_error
from corral.auth.scopes import Scope, require
from corral.domain import ExecRequest, FileChange, FileEntry
from corral.errors import CorralError, InvalidInput, LimitExceeded, NotFound, SandboxError

LIST_MAX = 10_000
MAX_WATCHERS = 1_000
WATCHER_EVENTS = 10_000
KEEPALIVE_S = 50.0
KINDS = {"created": pb.EventType.CREATE, "modified": pb.EventType.WRITE, "deleted": pb.EventType.REMOVE}


def entry_info(entry: FileEntry) -> pb.EntryInfo:
    kind = (
        pb.FileType.SYMLINK
        if entry.is_symlink
        else pb.FileType.DIRECTORY
        if entry.is_dir
        else pb.FileType.FILE
    )
    mode = entry.mode & 0o7777
    type_bits = stats.S_IFLNK if entry.is_symlink else stats.S_IFDIR if entry.is_dir else stats.S_IFREG
    seconds = int(entry.modified_at)
    return pb.EntryInfo(
        name=entry.name or posixpath.basename(entry.path),
        type=kind,
        path=entry.path,
        size=entry.size,
        mode=mode,
        permissions=stats.filemode(type_bits | mode),
        owner="",
        group="",
        modified_time=Timestamp(seconds=seconds, nanos=int((entry.modified_at - seconds) * 1e9)),
        is_symlink=entry.is_symlink,
    )


@dataclass
class Watcher:
    sandbox_id: str
    task: asyncio.Task[None] | None = None
    events: deque[pb.FilesystemEvent] = field(default_factory=lambda: deque(maxlen=WATCHER_EVENTS))
    error: ConnectError | None = None


class FilesystemHandler(Filesystem):
    """The ``filesystem.Filesystem`` service of one server (every sandbox's)."""

    def __init__(self, calls: Callers) -> None:
        self.calls = calls
        self.watchers: dict[str, Watcher] = {}

    async def stat(self, request: pb.StatRequest, ctx: Context) -> pb.StatResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        return pb.StatResponse(entry=entry_info(await self._stat(caller, user.path(request.path))))

    async def list_dir(self, request: pb.ListDirRequest, ctx: Context) -> pb.ListDirResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        root = user.path(request.path)
        if not (await self._stat(caller, root)).is_dir:
            raise InvalidInput(f"{root} is not a directory", field="path")
        entries: list[pb.EntryInfo] = []
        level = [root]
        for _ in range(max(request.depth, 1)):
            below: list[str] = []
            for directory in level:
                for entry in await self._list(caller, directory):
                    if len(entries) >= LIST_MAX:
                        raise LimitExceeded(f"more than {LIST_MAX} entries: list with a smaller depth")
                    entries.append(entry_info(entry))
                    if entry.is_dir and not entry.is_symlink:
                        below.append(entry.path)
            level = below
        return pb.ListDirResponse(entries=entries)

    async def make_dir(self, request: pb.MakeDirRequest, ctx: Context) -> pb.MakeDirResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        target = user.path(request.path)
        files = self.calls.core.files
        if await files.stat(caller.principal, caller.sandbox_id, target) is not None:
            raise ConnectError(Code.ALREADY_EXISTS, f"{target} already exists")
        await self._run(caller, user, "mkdir", "-p", "--", target)
        return pb.MakeDirResponse(entry=entry_info(await self._stat(caller, target)))

    async def move(self, request: pb.MoveRequest, ctx: Context) -> pb.MoveResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        source = user.path(request.source, "source")
        destination = user.path(request.destination, "destination")
        await self._stat(caller, source)
        await self._run(caller, user, "mv", "-T", "--", source, destination)
        return pb.MoveResponse(entry=entry_info(await self._stat(caller, destination)))

    async def remove(self, request: pb.RemoveRequest, ctx: Context) -> pb.RemoveResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        await self.calls.core.files.remove(caller.principal, caller.sandbox_id, user.path(request.path))
        return pb.RemoveResponse()

    # ---- watches ---------------------------------------------------------------------

    async def watch_dir(
        self, request: pb.WatchDirRequest, ctx: Context
    ) -> AsyncIterator[pb.WatchDirResponse]:
        caller, user = await self.calls.of(ctx.request_headers)
        root = user.path(request.path)
        async with await self._watch(caller, root) as changes:
            yield watch_started()
            step: asyncio.Future[FileChange | None] | None = None
            try:
                while True:
                    step = asyncio.ensure_future(anext(changes, None))
                    while not (await asyncio.wait({step}, timeout=KEEPALIVE_S))[0]:
                        yield watch_keepalive()
                    change = step.result()
                    if change is None:
                        return
                    event = _event(root, change, request.recursive)
                    if event is not None:
                        yield watched(event)
            finally:
                if step is not None and not step.done():
                    step.cancel()

    async def create_watcher(
        self, request: pb.CreateWatcherRequest, ctx: Context
    ) -> pb.CreateWatcherResponse:
        caller, user = await self.calls.of(ctx.request_headers)
        if len(self.watchers) >= MAX_WATCHERS:
            raise LimitExceeded(f"{MAX_WATCHERS} watchers at once on this server: remove some")
        root = user.path(request.path)
        watch = await self._watch(caller, root)
        changes = await watch.__aenter__()  # entered here: a missing directory fails the call
        watcher_id = "w-" + secrets.token_hex(8)
        watcher = Watcher(caller.sandbox_id)

        async def follow() -> None:
            try:
                async for change in changes:
                    event = _event(root, change, request.recursive)
                    if event is not None:
                        watcher.events.append(event)
            except CorralError as exc:  # the sandbox went away: GetWatcherEvents says so
                watcher.error = connect_error(exc)
            finally:
                await watch.__aexit__(None, None, None)

        watcher.task = asyncio.create_task(follow(), name=f"e2b-watcher-{watcher_id}")
        self.watchers[watcher_id] = watcher
        return pb.CreateWatcherResponse(watcher_id=watcher_id)

    async def get_watcher_events(
        self, request: pb.GetWatcherEventsRequest, ctx: Context
    ) -> pb.GetWatcherEventsResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        watcher = self._watcher(caller, request.watcher_id)
        events = list(watcher.events)
        watcher.events.clear()
        if not events and watcher.error is not None:
            raise watcher.error
        return pb.GetWatcherEventsResponse(events=events)

    async def remove_watcher(
        self, request: pb.RemoveWatcherRequest, ctx: Context
    ) -> pb.RemoveWatcherResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        watcher = self._watcher(caller, request.watcher_id)
        del self.watchers[request.watcher_id]
        if watcher.task is not None:
            watcher.task.cancel()
        return pb.RemoveWatcherResponse()

    def close(self) -> None:
        """Stop every watcher (at shutdown)."""
        for watcher in self.watchers.values():
            if watcher.task is not None:
                watcher.task.cancel()
        self.watchers.clear()

    # ---- helpers ---------------------------------------------------------------------

    def _watcher(self, caller: Caller, watcher_id: str) -> Watcher:
        watcher = self.watchers.get(watcher_id)
        if watcher is None or watcher.sandbox_id != caller.sandbox_id:
            raise NotFound(f"watcher {watcher_id} not found")
        return watcher

    async def _watch(
        self, caller: Caller, root: str
    ) -> AbstractAsyncContextManager[AsyncIterator[FileChange]]:
        require(caller.principal, Scope.SANDBOX_READ)
        files = await self.calls.core.sandboxes.files_of(caller.principal, caller.sandbox_id)
        await self._stat(caller, root)
        return files.watch(root)

    async def _stat(self, caller: Caller, path: str) -> FileEntry:
        entry = await self.calls.core.files.stat(caller.principal, caller.sandbox_id, path)
        if entry is None:
            raise NotFound(f"{path} not found")
        return entry

    async def _list(self, caller: Caller, directory: str) -> list[FileEntry]:
        files = self.calls.core.files
        found: list[FileEntry] = []
        cursor: str | None = None
        while True:
            page, cursor = await files.list(caller.principal, caller.sandbox_id, directory, cursor)
            found += page
            if cursor is None or len(found) > LIST_MAX:
                return found

    async def _run(self, caller: Caller, user: User, *argv: str) -> None:
        """A file command run as ``user``; its complaint is InvalidInput naming the path."""
        await self.calls.prepare(caller, user)
        request = ExecRequest(argv[0], argv[1:], user.envs(), user.home, 30, user.run_as)
        result = await self.calls.core.commands.run(caller.principal, caller.sandbox_id, request)
        if result.exit_code != 0:
            message = result.stderr.decode(errors="replace").strip()[-300:]
            if result.timed_out:
                raise SandboxError(f"{argv[0]} did not finish in time")
            raise InvalidInput(message or f"{argv[0]} failed ({result.exit_code})", field="path")


def watch_started() -> pb.WatchDirResponse:
    start: Oneof[Literal["start"], pb.WatchDirResponse.StartEvent] = Oneof(
        "start", pb.WatchDirResponse.StartEvent()
    )
    return pb.WatchDirResponse(event=start)


def watch_keepalive() -> pb.WatchDirResponse:
    ping: Oneof[Literal["keepalive"], pb.WatchDirResponse.KeepAlive] = Oneof(
        "keepalive", pb.WatchDirResponse.KeepAlive()
    )
    return pb.WatchDirResponse(event=ping)


def watched(event: pb.FilesystemEvent) -> pb.WatchDirResponse:
    change: Oneof[Literal["filesystem"], pb.FilesystemEvent] = Oneof("filesystem", event)
    return pb.WatchDirResponse(event=change)


def _event(root: str, change: FileChange, recursive: bool) -> pb.FilesystemEvent | None:
    kind = KINDS.get(change.kind)
    name = posixpath.relpath(change.path, root) if change.path.startswith(root) else change.path
    if kind is None or name == "." or (not recursive and "/" in name):
        return None
    return pb.FilesystemEvent(name=name, type=kind)
