"""``AgentClient``: the ``corral.ports.Agent`` port over the agent's unix socket.

One connection per operation, as the protocol says. The agent is untrusted: every
frame is size-checked by ``wire.read_frame``, every answer is validated (``answers.py``),
exec output is capped at ``output_limit`` bytes per stream, or what the caller's
``OutputKeeper`` grants (the rest is dropped by the agent at the source, or drained
and dropped here, and the result says ``truncated``), and every wait has a deadline except the
live output of an attachment, which waits as long as its consumer iterates.

Errors: agent error codes become corral errors (see ``wire.raise_for_answer``);
an unreachable agent, a timeout or a malformed answer is ``AgentError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

from corral.agent import wire
from corral.agent.answers import (
    Disk,
    Executed,
    Listing,
    OneSession,
    Opened,
    Pong,
    Ports,
    Sessions,
    Stat,
    Watched,
    Written,
    parse,
)
from corral.agent.wire import MAX_PAYLOAD, Frame, FrameType
from corral.domain import (
    DiskUsage,
    ExecRequest,
    ExecResult,
    FileChange,
    FileEntry,
    SessionEvent,
    SessionInfo,
    SessionSpec,
    Stream,
)
from corral.errors import AgentError, Conflict, InvalidInput
from corral.ports import FilePage, OutputKeeper

EXEC_GRACE = 10.0
"""Seconds the host waits past an exec's own timeout before giving up on the agent."""

_Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AgentClient:
    """Client of one sandbox's agent. Cheap to construct: no I/O until an op runs.

    ``op_timeout`` bounds each wait of an operation (an answer, a chunk of a file, a
    drain); ``exec_timeout`` is the timeout given to the agent for an exec request that
    has none, so no command outlives every observer."""

    def __init__(
        self,
        socket_path: pathlib.Path | str,
        *,
        connect_timeout: float = 5.0,
        op_timeout: float = 30.0,
        output_limit: int = 16 * 1024 * 1024,
        exec_timeout: float = 600.0,
    ) -> None:
        self.socket_path = pathlib.Path(socket_path)
        self.connect_timeout = connect_timeout
        self.op_timeout = op_timeout
        self.output_limit = output_limit
        self.exec_timeout = exec_timeout

    def __repr__(self) -> str:
        return f"AgentClient({str(self.socket_path)!r})"

    # ---- connections

    async def _connect(self) -> _Connection:
        path = self.socket_path
        try:
            async with asyncio.timeout(self.connect_timeout):
                if len(os.fsencode(path)) <= 100:
                    return await asyncio.open_unix_connection(path, limit=MAX_PAYLOAD)
                # a unix socket path may only be 107 bytes; go through the directory's fd
                dir_fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
                try:
                    short = f"/proc/self/fd/{dir_fd}/{path.name}"
                    return await asyncio.open_unix_connection(short, limit=MAX_PAYLOAD)
                finally:
                    os.close(dir_fd)
        except TimeoutError as exc:
            raise AgentError(f"agent did not accept within {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise AgentError(f"cannot reach the agent at {self.socket_path}: {exc}") from exc

    @asynccontextmanager
    async def _request(self, request: Mapping[str, Any]) -> AsyncIterator[_Connection]:
        """A connection with ``request`` sent; closed on exit."""
        frame = wire.encode_frame(FrameType.JSON, wire.encode_json(request))
        reader, writer = await self._connect()
        try:
            writer.write(frame)  # one system call, not one for the header and one for the payload
            await self._drain(writer)
            yield reader, writer
        finally:
            await _close(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.op_timeout):
                await writer.drain()
        except TimeoutError as exc:
            raise AgentError(f"agent did not read for {self.op_timeout:g} s") from exc
        except (ConnectionError, OSError) as exc:
            raise AgentError(f"connection to the agent failed: {exc}") from exc

    async def _call(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One request, one JSON answer."""
        async with self._request(request) as (reader, _):
            return wire.json_answer(await wire.read_frame(reader, self.op_timeout))

    # ---- Agent

    async def ping(self) -> None:
        parse(Pong, await self._call({"op": "ping"}))

    async def set_envs(self, envs: dict[str, str]) -> None:
        await self._call({"op": "env.set", "envs": dict(envs)})

    async def exec(self, request: ExecRequest, keep: OutputKeeper | None = None) -> ExecResult:
        """Output is kept in one growing buffer per stream (large buffers are mapped
        memory, given back whole when freed), at most ``keep.limit`` bytes of each
        (``output_limit`` without ``keep``) and only what ``keep`` grants; the agent is
        asked to drop the rest at the source, and what it sends anyway is drained."""
        timeout = request.timeout_s if request.timeout_s and request.timeout_s > 0 else self.exec_timeout
        limit = self.output_limit if keep is None else keep.limit
        message = {
            "op": "exec",
            "cmd": request.cmd,
            "args": list(request.args),
            "envs": dict(request.envs),
            "cwd": request.cwd,
            "timeout": timeout,
            "outputLimit": limit,
        }
        if request.user is not None:
            message["user"] = request.user
        if request.stdin is not None:
            message["stdin"] = request.stdin.decode("utf-8", "surrogateescape")
        out, err = bytearray(), bytearray()
        truncated = False
        async with self._request(message) as (reader, _):
            try:
                async with asyncio.timeout(timeout + EXEC_GRACE):
                    while True:
                        frame = await wire.read_frame(reader, None)
                        if frame is not None and frame.type in (FrameType.STDOUT, FrameType.STDERR):
                            sink = out if frame.type is FrameType.STDOUT else err
                            size = len(frame.payload)
                            room = min(max(limit - len(sink), 0), size)
                            if room and keep is not None:
                                stream = Stream.STDOUT if sink is out else Stream.STDERR
                                room = keep.grant(stream, room)
                            if room < size:
                                truncated = True
                            sink += frame.payload[:room] if room < size else frame.payload
                            continue
                        answer = wire.json_answer(frame)
                        break
            except TimeoutError as exc:
                raise AgentError(f"exec did not end within {timeout + EXEC_GRACE:g} s") from exc
        done = parse(Executed, answer)
        return ExecResult(
            exit_code=124 if done.timed_out else done.exit_code,
            stdout=_take(out),
            stderr=_take(err),
            timed_out=done.timed_out,
            truncated=truncated or done.truncated,
        )

    async def start_session(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        message = {
            "op": "session.start",
            "id": session_id,
            "cmd": spec.cmd,
            "args": list(spec.args),
            "envs": dict(spec.envs),
            "cwd": spec.cwd,
            "timeout": spec.timeout_s,
            "maxRunAfterDisconnect": spec.max_run_after_disconnect_s,
            "pty": None if spec.pty is None else {"cols": spec.pty.cols, "rows": spec.pty.rows},
        }
        if spec.user is not None:
            message["user"] = spec.user
        if spec.hold_output:
            message["holdOutput"] = True
        return parse(OneSession, await self._call(message)).session.info()

    async def list_sessions(self) -> list[SessionInfo]:
        answer = parse(Sessions, await self._call({"op": "session.list"}))
        return [session.info() for session in answer.sessions]

    async def session(self, session_id: str) -> SessionInfo:
        return parse(OneSession, await self._call({"op": "session.get", "id": session_id})).session.info()

    @asynccontextmanager
    async def attach(self, session_id: str) -> AsyncIterator[Attachment]:
        """Attach to a session; the attachment ends when the block exits."""
        async with self._request({"op": "session.attach", "id": session_id}) as (reader, writer):
            answer = wire.json_answer(await wire.read_frame(reader, self.op_timeout))
            info = parse(OneSession, answer).session.info()
            yield Attachment(reader, writer, info, self)

    async def kill_session(self, session_id: str, signal: int = 9) -> None:
        await self._call({"op": "session.kill", "id": session_id, "signal": signal})

    async def resize_session(self, session_id: str, cols: int, rows: int) -> None:
        await self._call({"op": "session.resize", "id": session_id, "cols": cols, "rows": rows})

    async def read_file(
        self, path: str, *, within: str | None = None
    ) -> AbstractAsyncContextManager[ReadChunks]:
        reader, writer = await self._connect()
        try:
            request = _within({"op": "file.read", "path": path}, within)
            writer.write(wire.encode_frame(FrameType.JSON, wire.encode_json(request)))
            await self._drain(writer)
            opened = parse(Opened, wire.json_answer(await wire.read_frame(reader, self.op_timeout)))
        except BaseException:
            await _close(writer)
            raise
        return FileStream(reader, writer, opened.size, self.op_timeout, opened.length)

    async def write_file(
        self,
        path: str,
        chunks: AsyncIterable[bytes],
        mode: int = 0o644,
        *,
        within: str | None = None,
        owner: int | None = None,
    ) -> int:
        sent = 0
        request = _within({"op": "file.write", "path": path, "mode": mode}, within)
        if owner is not None:
            request["owner"] = owner
        async with self._request(request) as (reader, writer):
            answer_task = asyncio.create_task(wire.read_frame(reader, None))
            try:
                async for chunk in chunks:
                    for start in range(0, len(chunk), wire.DATA_CHUNK):
                        if answer_task.done():  # an early answer is an error: stop sending
                            break
                        piece = chunk[start : start + wire.DATA_CHUNK]
                        wire.write_frame(writer, FrameType.DATA, bytes(piece))
                        await self._drain(writer)
                        sent += len(piece)
                    if answer_task.done():
                        break
                early = answer_task.done()
                if not early:
                    wire.write_frame(writer, FrameType.EOF)
                    await self._drain(writer)
                try:
                    async with asyncio.timeout(self.op_timeout):
                        frame = await answer_task
                except TimeoutError as exc:
                    raise AgentError(f"agent did not confirm the write within {self.op_timeout:g} s") from exc
            finally:
                answer_task.cancel()
                with contextlib.suppress(BaseException):
                    await answer_task
        answer = wire.json_answer(frame)
        if early:
            raise AgentError("agent confirmed a write before it ended")
        written = parse(Written, answer).written
        if written != sent:
            raise AgentError(f"agent wrote {written} bytes of {sent}")
        return written

    async def list_dir(
        self, path: str, after: str | None = None, limit: int | None = None, *, within: str | None = None
    ) -> FilePage:
        request = _within({"op": "file.list", "path": path}, within)
        if after is not None:
            request["after"] = after
        if limit is not None:
            request["limit"] = limit
        listing = parse(Listing, await self._call(request))
        entries = [item.entry() for item in listing.entries]
        following = listing.next
        if limit is not None and len(entries) > limit:
            raise AgentError(f"agent answer: more than {limit} entries")
        if following is not None and (
            (after is not None and following <= after) or (entries and following < entries[-1].name)
        ):
            raise AgentError("agent answer: next does not follow the entries")
        return FilePage(entries, following)

    async def stat(self, path: str, *, within: str | None = None) -> FileEntry | None:
        found = parse(Stat, await self._call(_within({"op": "file.stat", "path": path}, within))).entry
        return None if found is None else found.entry()

    async def mkdir(self, path: str) -> None:
        await self._call({"op": "file.mkdir", "path": path})

    async def remove(self, path: str, *, within: str | None = None) -> None:
        await self._call(_within({"op": "file.remove", "path": path}, within))

    @asynccontextmanager
    async def watch(
        self, path: str, *, within: str | None = None
    ) -> AsyncIterator[AsyncIterator[FileChange]]:
        """Changes as the agent reports them; each wait for one has no deadline (the
        consumer decides how long to watch), each frame is bounded by ``read_frame``."""
        async with self._request(_within({"op": "file.watch", "path": path}, within)) as (reader, _):
            wire.json_answer(await wire.read_frame(reader, self.op_timeout))

            async def changes() -> AsyncIterator[FileChange]:
                while (frame := await wire.read_frame(reader, None)) is not None:
                    event = parse(Watched, wire.json_answer(frame)).event
                    yield FileChange(event.path, event.type, event.dropped)

            yield changes()

    async def ports(self) -> list[int]:
        return sorted(set(parse(Ports, await self._call({"op": "ports"})).ports))

    async def disk(self) -> DiskUsage:
        answer = parse(Disk, await self._call({"op": "disk"}))
        return DiskUsage(answer.total, answer.used)

    async def shutdown(self) -> None:
        await self._call({"op": "shutdown"})


class Attachment:
    """A live attachment (``corral.ports.Attachment``); ``info`` is the session as it
    was when attached. It is its own iterator: events are consumed once, and
    iteration may stop and resume. Live output has no deadline (the consumer decides
    how long to wait); the replay does."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        info: SessionInfo,
        client: AgentClient,
    ) -> None:
        self.info = info
        self._replaying = True
        self._ended = False
        self._reader = reader
        self._writer = writer
        self._client = client

    def __aiter__(self) -> Attachment:
        return self

    async def __anext__(self) -> SessionEvent:
        if self._ended:
            raise StopAsyncIteration
        timeout = self._client.op_timeout if self._replaying else None
        try:
            frame = await wire.read_frame(self._reader, timeout)
            if frame is None:
                raise StopAsyncIteration
            event = _event(frame, self._replaying)
        except BaseException:
            self._ended = True
            raise
        if event.stream is Stream.SCROLLBACK_END:
            self._replaying = False
        elif event.stream is Stream.EXIT:
            self._ended = True
        return event

    async def _send(self, ftype: FrameType, payload: bytes = b"") -> None:
        if self._writer.is_closing():
            raise Conflict("the attachment has ended")
        wire.write_frame(self._writer, ftype, payload)
        await self._client._drain(self._writer)

    async def send_stdin(self, data: bytes) -> None:
        for start in range(0, len(data), MAX_PAYLOAD):
            await self._send(FrameType.STDIN, data[start : start + MAX_PAYLOAD])

    async def close_stdin(self) -> None:
        if not self.info.pty:
            await self._send(FrameType.EOF)

    async def resize(self, cols: int, rows: int) -> None:
        if not self.info.pty:
            raise InvalidInput("the session has no terminal to resize", field="pty")
        if not (0 < cols < 65536 and 0 < rows < 65536):
            raise InvalidInput("cols and rows must be between 1 and 65535", field="cols")
        payload = wire.encode_json({"op": "resize", "cols": cols, "rows": rows})
        await self._send(FrameType.JSON, payload)


class FileStream:
    """A file being read: an async context manager over its connection whose value is
    the file's chunks (``ReadChunks``). ``size`` is what the agent's fstat said (0 for
    /proc files that still have data); ``length``, when the agent gave one, is exactly
    what the chunks add up to: more, or an end before it, is ``AgentError``."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        size: int,
        timeout: float,
        length: int | None = None,
    ):
        self.size = size
        self.length = length
        self._reader = reader
        self._writer = writer
        self._timeout = timeout

    async def __aenter__(self) -> ReadChunks:
        return ReadChunks(self._chunks(), self.length)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _close(self._writer)

    async def _chunks(self) -> AsyncIterator[bytes]:
        got, length = 0, self.length
        while True:
            frame = await wire.read_frame(self._reader, self._timeout)
            if frame is None:
                raise AgentError("agent ended a file read without EOF")
            if frame.type is FrameType.DATA:
                got += len(frame.payload)
                if length is not None and got > length:
                    raise AgentError(f"agent sent more than the file's {length} bytes")
                yield frame.payload
            elif frame.type is FrameType.EOF:
                if length is not None and got != length:
                    raise AgentError(f"agent ended a read of {length} bytes after {got}")
                return
            else:
                wire.json_answer(frame)  # an error answer mid-stream raises here
                raise AgentError("agent sent an answer inside a file read")


class ReadChunks(AsyncIterator[bytes]):
    """The chunks of a file being read (an async iterator of bytes) and ``length``: the
    bytes they add up to, or None when the file cannot say (procfs, sysfs, sparse)."""

    def __init__(self, chunks: AsyncIterator[bytes], length: int | None) -> None:
        self.length = length
        self._chunks = chunks

    def __aiter__(self) -> ReadChunks:
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()


def _within(request: dict[str, Any], within: str | None) -> dict[str, Any]:
    """``request`` confined to the directory ``within`` (the agent checks, in the sandbox)."""
    if within is not None:
        request["within"] = within
    return request


def _take(buffer: bytearray) -> bytes:
    """The buffer's bytes, the buffer emptied (so its memory goes at once, not with the
    frame that held it)."""
    data = bytes(buffer)
    buffer.clear()
    return data


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close, dropping unsent data if the agent does not take it within a second."""
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except (ConnectionError, OSError):
        pass


def _event(frame: Frame, replaying: bool) -> SessionEvent:
    if frame.type is FrameType.STDOUT:
        return SessionEvent(Stream.STDOUT, frame.payload)
    if frame.type is FrameType.STDERR:
        return SessionEvent(Stream.STDERR, frame.payload)
    if frame.type is FrameType.SCROLLBACK_END and replaying:
        return SessionEvent(Stream.SCROLLBACK_END)
    if frame.type is FrameType.EXIT and not replaying:
        if len(frame.payload) != 4:
            raise AgentError("agent sent an EXIT frame without a 4-byte code")
        return SessionEvent(Stream.EXIT, exit_code=int.from_bytes(frame.payload, "big", signed=True))
    if frame.type is FrameType.JSON:
        wire.json_answer(frame)  # an error raises as its corral error
    raise AgentError(f"agent sent {frame.type.name} inside an attachment")
