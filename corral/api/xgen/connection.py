"""One connection of the xgen WebSocket: processes, files, watches, ports and stats
over binary frames (``frames.py``), as xgen's SDKs use them.

Order and contracts:
- SandboxReady (channel 0, id 0) is the first frame; then PortOpen for every port
  already listening; later opens and closes are found by asking the agent every
  ``PORT_POLL_S``. SandboxStats ``{cpu_percent, memory_bytes, disk_used_bytes}`` comes
  every ``STATS_INTERVAL_S`` (CPU and memory from the sandbox's cgroups through the
  runtime, the disk from the agent); it is skipped while the client lags.
- Ping is answered with Pong, same channel and id.
- Requests run concurrently (at most ``CONCURRENT`` at once; beyond that the
  connection stops reading until one ends). A request that fails is answered with an
  Error frame ``{code, message}`` on its channel and id; a malformed frame (short,
  unknown type, not MessagePack, a field missing) likewise. The connection stays up.
- Files (channel 0, client-chosen ids; paths under the workspace, ``WorkspaceService``):
  FsRead is answered with a FsRead frame whose payload is the file's raw bytes (at most
  ``READ_MAX``: beyond it, Error fs_error naming the limit; ``READS`` at a time, so a
  connection holds at most that many files in memory); FsList with a FsList
  frame holding a MessagePack array of ``{name, size, isDir, is_dir, modTime,
  mod_time}``; FsWrite (content bin or str, parents made) and FsRemove with an empty
  Ack. FsWatch ``{path}`` is acked, then FsEvent ``{path, type}`` (relative to the
  workspace) on the watch request's channel and id; ``{path, unwatch: true}`` ends it.
- When the sandbox stops (deleted, its lifetime over, or hibernated through another
  surface: the connection itself is no use of it), SandboxError ``{code: "sandbox_stopped", message}`` is sent and the
  connection closes (1000). The ports poll looks first, and never wakes a sandbox; while
  it is paused (frozen: its ports and stats stay as they were) neither asks it anything.
- Everything sent goes through the connection's ``Outbox`` (bounded). A message the
  client sends is at most 16 MiB (uvicorn's ``ws_max_size``: a larger one closes the
  connection with 1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from starlette.websockets import WebSocket, WebSocketDisconnect

from corral.api.xgen import mapping
from corral.api.xgen.channels import Channels
from corral.api.xgen.frames import BadFrame, Code, Frame, Kind, decode, encode
from corral.api.xgen.outbox import Outbox
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import FileChange, SandboxStatus
from corral.errors import CorralError, Forbidden, NotFound
from corral.services import workspace

log = logging.getLogger("corral.api.xgen")

PORT_POLL_S = 1.0
STATS_INTERVAL_S = 2.0
CONCURRENT = 16
READ_MAX = 16 << 20
READS = 2  # FsReads held in memory at once per connection
CLOSE_FLUSH_S = 5.0
LIVE = frozenset({SandboxStatus.STARTING, SandboxStatus.RUNNING, SandboxStatus.PAUSED})
MAX_WATCHES = 64


class Connection:
    def __init__(self, ws: WebSocket, core: Core, principal: Principal, sandbox_id: str) -> None:
        self.ws, self.core, self.principal, self.sandbox_id = ws, core, principal, sandbox_id
        self.outbox = Outbox(ws)
        self.channels = Channels(core, principal, sandbox_id, self.outbox, self.fail)
        self.watches: dict[str, asyncio.Task[None]] = {}
        self.slots = asyncio.Semaphore(CONCURRENT)
        self.reads = asyncio.Semaphore(READS)
        self.tasks: set[asyncio.Task[None]] = set()
        self.handlers: dict[Kind, Callable[[Frame], Awaitable[None]]] = {
            Kind.EXEC_START: self.channels.start,
            Kind.EXEC_STDIN: self.channels.stdin,
            Kind.EXEC_RESIZE: self.channels.resize,
            Kind.EXEC_SIGNAL: self.channels.signal,
            Kind.FS_READ: self.fs_read,
            Kind.FS_WRITE: self.fs_write,
            Kind.FS_LIST: self.fs_list,
            Kind.FS_REMOVE: self.fs_remove,
            Kind.FS_WATCH: self.fs_watch,
        }

    async def serve(self) -> None:
        """Run until the client goes or the sandbox stops; the socket must be accepted."""
        self.outbox.offer(encode(Kind.SANDBOX_READY))
        writer = asyncio.create_task(self.outbox.run(), name="xgen-writer")
        ports = asyncio.create_task(self._ports(), name="xgen-ports")
        stats = asyncio.create_task(self._stats(), name="xgen-stats")
        reader = asyncio.create_task(self._read(), name="xgen-reader")
        stopped = False
        try:
            await asyncio.wait([reader, writer, ports], return_when=asyncio.FIRST_COMPLETED)
            stopped = ports.done() and not ports.cancelled() and ports.exception() is None
            if stopped:  # the sandbox stopped: its SandboxError goes out first
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.drained(), CLOSE_FLUSH_S)
                with contextlib.suppress(RuntimeError, OSError):
                    await self.ws.close(1000)
        finally:
            tasks = [reader, writer, ports, stats, *self.tasks, *self.watches.values()]
            for task in tasks:
                task.cancel()
            await self.channels.close(kill=not stopped)  # a stopped sandbox is not woken
            await asyncio.gather(*tasks, return_exceptions=True)

    # ---- reading ---------------------------------------------------------------------

    async def _read(self) -> None:
        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                self.error(Code.INVALID_PAYLOAD, "binary frames only", 0, 0)
                continue
            try:
                frame = decode(data)
            except BadFrame as bad:
                self.error(bad.code, bad.message, bad.channel, bad.id)
                continue
            if frame.kind is Kind.PING:
                await self.outbox.put(encode(Kind.PONG, frame.channel, frame.id))
                continue
            if frame.kind is Kind.PONG:
                continue
            handler = self.handlers.get(frame.kind)
            if handler is None:
                self.error(
                    Code.UNKNOWN_MESSAGE, f"{frame.kind.name} is not sent by clients", frame.channel, frame.id
                )
                continue
            await self.slots.acquire()
            task = asyncio.create_task(self._handle(handler, frame), name=f"xgen-{frame.kind.name}")
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _handle(self, handler: Callable[[Frame], Awaitable[None]], frame: Frame) -> None:
        try:
            await handler(frame)
        except BadFrame as bad:
            self.error(bad.code, bad.message, bad.channel, bad.id)
        except CorralError as exc:
            code = Code.EXEC_FAILED if frame.kind.name.startswith("EXEC") else Code.FS_ERROR
            self.fail(exc, code, frame.channel, frame.id)
        except Exception:
            log.exception("xgen %s failed", frame.kind.name)
            self.error(Code.INTERNAL, "internal error", frame.channel, frame.id)
        finally:
            self.slots.release()

    # ---- errors ----------------------------------------------------------------------

    def error(self, code: Code, message: str, channel: int, id: int) -> None:
        """An Error frame; dropped while the client lags (it is not reading anyway)."""
        self.outbox.offer(encode(Kind.ERROR, channel, id, {"code": code.value, "message": message}))

    def fail(self, exc: CorralError, code: Code, channel: int, id: int) -> None:
        if isinstance(exc, Forbidden) and "lacks the scope" in exc.message:
            code = Code.FORBIDDEN
        message = exc.message if not exc.field else f"{exc.field}: {exc.message}"
        self.error(code, message, channel, id)

    # ---- files -----------------------------------------------------------------------

    def _path(self, frame: Frame) -> str:
        value = frame.body.get("path")
        if not isinstance(value, str) or not value:
            raise BadFrame(
                Code.INVALID_PAYLOAD, f"{frame.kind.name}: path is required", frame.channel, frame.id
            )
        return value

    async def fs_read(self, frame: Frame) -> None:
        async with self.reads:
            await self._read_file(frame)

    async def _read_file(self, frame: Frame) -> None:
        opened = await self.core.workspace.read(self.principal, self.sandbox_id, self._path(frame))
        async with opened as chunks:
            if chunks.length is not None and chunks.length > READ_MAX:
                raise BadFrame(
                    Code.FS_ERROR,
                    f"the file is over the {READ_MAX} byte limit of FsRead",
                    frame.channel,
                    frame.id,
                )
            data = bytearray()
            async for chunk in chunks:
                data += chunk
                if len(data) > READ_MAX:
                    raise BadFrame(
                        Code.FS_ERROR,
                        f"the file is over the {READ_MAX} byte limit of FsRead",
                        frame.channel,
                        frame.id,
                    )
        await self.outbox.put(encode(Kind.FS_READ, frame.channel, frame.id, raw=bytes(data)))

    async def fs_write(self, frame: Frame) -> None:
        path = self._path(frame)
        content = frame.body.get("content", b"")
        if isinstance(content, str):
            content = content.encode()
        if not isinstance(content, bytes):
            raise BadFrame(
                Code.INVALID_PAYLOAD, "FsWrite: content must be bin or str", frame.channel, frame.id
            )
        mode = frame.body.get("mode") or 0o644
        if not isinstance(mode, int) or isinstance(mode, bool) or not 0 < mode <= 0o7777:
            raise BadFrame(
                Code.INVALID_PAYLOAD,
                "FsWrite: mode must be a file mode (e.g. 420 for 0644)",
                frame.channel,
                frame.id,
            )

        async def one() -> AsyncIterator[bytes]:
            if content:
                yield content

        await self.core.workspace.write(self.principal, self.sandbox_id, path, one(), mode)
        await self.outbox.put(encode(Kind.ACK, frame.channel, frame.id))

    async def fs_list(self, frame: Frame) -> None:
        entries = await self.core.workspace.list(
            self.principal, self.sandbox_id, frame.body.get("path") or "."
        )
        listing = [
            {
                "name": e.name,
                "size": e.size,
                "isDir": e.is_dir,
                "is_dir": e.is_dir,
                "modTime": int(e.modified_at),
                "mod_time": int(e.modified_at),
            }
            for e in entries
        ]
        await self.outbox.put(encode(Kind.FS_LIST, frame.channel, frame.id, listing))

    async def fs_remove(self, frame: Frame) -> None:
        recursive = frame.body.get("recursive") is True
        await self.core.workspace.remove(self.principal, self.sandbox_id, self._path(frame), recursive)
        await self.outbox.put(encode(Kind.ACK, frame.channel, frame.id))

    async def fs_watch(self, frame: Frame) -> None:
        key = workspace.path(frame.body.get("path") or ".")
        if frame.body.get("unwatch") is True:
            task = self.watches.pop(key, None)
            if task is not None:
                task.cancel()
            await self.outbox.put(encode(Kind.ACK, frame.channel, frame.id))
            return
        if key in self.watches:
            await self.outbox.put(encode(Kind.ACK, frame.channel, frame.id))
            return
        if len(self.watches) >= MAX_WATCHES:
            raise BadFrame(
                Code.FS_ERROR, f"at most {MAX_WATCHES} watches per connection", frame.channel, frame.id
            )
        opened = await self.core.workspace.watch(self.principal, self.sandbox_id, key)
        started = asyncio.Event()
        task = asyncio.create_task(self._watch(opened, frame, started), name="xgen-watch")
        self.watches[key] = task
        task.add_done_callback(lambda t: self.watches.pop(key, None) if self.watches.get(key) is t else None)
        await started.wait()

    async def _watch(
        self,
        opened: AbstractAsyncContextManager[AsyncIterator[FileChange]],
        frame: Frame,
        started: asyncio.Event,
    ) -> None:
        try:
            async with opened as changes:
                await self.outbox.put(encode(Kind.ACK, frame.channel, frame.id))
                started.set()
                async for change in changes:
                    event = {"path": workspace.relative(change.path), "type": change.kind}
                    await self.outbox.put(encode(Kind.FS_EVENT, frame.channel, frame.id, event))
        except CorralError as exc:
            self.fail(exc, Code.FS_ERROR, frame.channel, frame.id)
        finally:
            started.set()

    # ---- ports and stats -------------------------------------------------------------

    async def _ports(self) -> None:
        """Announce ports until the sandbox stops (then SandboxError, and return)."""
        known: set[int] = set()
        while True:
            try:
                sandbox = await self.core.sandboxes.get(self.principal, self.sandbox_id)
            except NotFound:
                sandbox = None
            if sandbox is None or sandbox.status not in LIVE:
                state = mapping.STATUS.get(sandbox.status, "error") if sandbox else "deleted"
                message = {"code": "sandbox_stopped", "message": f"the sandbox is {state}"}
                await self.outbox.put(encode(Kind.SANDBOX_ERROR, 0, 0, message))
                return
            if sandbox.status is SandboxStatus.PAUSED:  # asking would resume it
                await asyncio.sleep(PORT_POLL_S)
                continue
            try:
                now = set(await self.core.workspace.ports(self.principal, self.sandbox_id))
            except CorralError as exc:  # stopped since: the next round says so
                log.debug("ports of %s: %s", self.sandbox_id, exc.message)
                now = known
            for port in sorted(now - known):
                await self.outbox.put(encode(Kind.PORT_OPEN, 0, 0, {"port": port}))
            for port in sorted(known - now):
                await self.outbox.put(encode(Kind.PORT_CLOSE, 0, 0, {"port": port}))
            known = now
            await asyncio.sleep(PORT_POLL_S)

    async def _stats(self) -> None:
        last: tuple[float, float] | None = None
        while True:
            try:
                status = (await self.core.sandboxes.get(self.principal, self.sandbox_id)).status
                if status not in LIVE:
                    return  # never woken for its stats; the ports poll ends the connection
                if status is SandboxStatus.PAUSED:  # never resumed for its stats either
                    await asyncio.sleep(STATS_INTERVAL_S)
                    continue
                usage, disk = await self.core.workspace.usage(self.principal, self.sandbox_id)
            except NotFound:
                return
            except CorralError as exc:
                log.debug("stats of %s: %s", self.sandbox_id, exc.message)
            else:
                now = time.monotonic()
                percent = 0.0
                if last is not None and now > last[0]:
                    percent = max(0.0, (usage.cpu_seconds - last[1]) / (now - last[0]) * 100)
                last = (now, usage.cpu_seconds)
                stats = {
                    "cpu_percent": round(percent, 2),
                    "memory_bytes": usage.memory_bytes or 0,
                    "disk_used_bytes": disk.used,
                }
                self.outbox.offer(encode(Kind.SANDBOX_STATS, 0, 0, stats))
            await asyncio.sleep(STATS_INTERVAL_S)
