"""envd's ``process`` service (Connect RPC, the ``e2b`` SDK's ``commands`` and ``pty``)
over corral's exec sessions: a process is a session kept by the sandbox's agent.

- A pid is a number the session's id maps to (``pid_of``: 31 bits of a hash of it), so
  it needs no table and survives a restart of corral as the sessions do; a call that
  names a pid finds the session by listing the sandbox's sessions. The ``tag``
  selector names no process here (not_found).
- ``Start`` runs ``process.cmd`` with ``process.args`` (the SDK sends ``/bin/bash -l -c
  <cmd>``) as the user of the call's ``Authorization: Basic`` (``caller.user_named``)
  in ``cwd`` (default: that user's home), the sandbox's envs under the request's; a
  ``pty`` makes it a PTY of that size. Without ``stdin: true`` its stdin is closed at
  once (envd's behaviour: ``cat`` ends). The call's deadline (``Connect-Timeout-Ms``,
  the SDK's ``timeout``) ends the stream with deadline_exceeded (the SDK's
  TimeoutException) and the process ``PROCESS_GRACE_S`` later. The stream is one
  ``start`` event (the pid), the output as ``data`` (``stdout``/``stderr``, or ``pty``),
  one ``end`` event (``exit_code``, ``status`` "exit status N"); a ``keepalive`` event
  when nothing else was sent for ``Keepalive-Ping-Interval`` seconds (default 50).
  Ending the stream does not end the process (``disconnect``), a signal does.
- ``Connect`` streams a running process's output from now on (not what it printed
  before), with the same events; an ended one is not_found.
- ``SendInput``, ``StreamInput``, ``CloseStdin`` and ``Update`` (a PTY's size) go
  through the attachment of the process's open ``Start`` or ``Connect`` stream when
  there is one on this server, so input and its end reach the process in the order the
  calls came (two attachments are two connections to the agent, whose order is not
  kept); else through an attachment of their own. ``SendSignal`` signals its process
  group.
- ``List``: the sandbox's running processes with their command and arguments (a
  session does not keep its envs or cwd: those are empty).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from e2b.envd.process import process_pb as pb
from e2b.envd.process.process_connect import Process
from protobuf import Oneof

from corral.api.e2b.caller import Caller, Callers, Context
from corral.domain import PtySize, SessionInfo, SessionSpec, Stream
from corral.errors import ExecTimeout, InvalidInput, NotFound
from corral.ports import Attachment

KEEPALIVE_HEADER = "keepalive-ping-interval"
PROCESS_GRACE_S = 1.0  # the process outlives its call's deadline by this: the stream ends first
DEFAULT_KEEPALIVE_S = 50.0
EXIT_EVENTS = frozenset({Stream.EXIT})


def pid_of(session_id: str) -> int:
    """The pid the SDK sees for a session (1 .. 2**31 - 1)."""
    digest = hashlib.blake2b(session_id.encode(), digest_size=4).digest()
    return (int.from_bytes(digest, "big") & 0x7FFFFFFF) or 1


class ProcessHandler(Process):
    """The ``process.Process`` service of one server (every sandbox's)."""

    def __init__(self, calls: Callers) -> None:
        self.calls = calls
        self.streams: dict[tuple[str, str], builtins.list[Attachment]] = {}  # open streams' attachments

    # ---- streams ---------------------------------------------------------------------

    async def start(self, request: pb.StartRequest, ctx: Context) -> AsyncIterator[pb.StartResponse]:
        caller, user = await self.calls.of(ctx.request_headers)
        config = request.process
        if config is None or not config.cmd:
            raise InvalidInput("process.cmd is required", field="process.cmd")
        size = request.pty.size if request.pty is not None else None
        timeout_ms = ctx.timeout_ms
        spec = SessionSpec(
            cmd=config.cmd,
            args=tuple(config.args),
            envs={**user.envs(), **dict(config.envs)},
            cwd=user.path(config.cwd, "process.cwd") if config.cwd else user.home,
            timeout_s=timeout_ms / 1000 + PROCESS_GRACE_S if timeout_ms else None,
            pty=PtySize(size.cols or 80, size.rows or 24) if size is not None else None,
            user=user.run_as,
            hold_output=True,
        )
        await self.calls.prepare(caller, user)
        core = self.calls.core
        info = await core.commands.start_session(caller.principal, caller.sandbox_id, spec)
        async for event in self._stream(caller, info, ctx, scrollback=True, stdin=bool(request.stdin)):
            yield pb.StartResponse(event=event)

    async def connect(self, request: pb.ConnectRequest, ctx: Context) -> AsyncIterator[pb.ConnectResponse]:
        caller, _ = await self.calls.of(ctx.request_headers)
        info = await self._find(caller, request.process)
        async for event in self._stream(caller, info, ctx, scrollback=False, stdin=True):
            yield pb.ConnectResponse(event=event)

    async def _stream(
        self, caller: Caller, info: SessionInfo, ctx: Context, *, scrollback: bool, stdin: bool
    ) -> AsyncIterator[pb.ProcessEvent]:
        pid = pid_of(info.id)
        core = self.calls.core
        attach = await core.commands.attach(caller.principal, caller.sandbox_id, info.id)
        async with attach as attachment, self._streaming(caller, info, attachment):
            if not stdin and not info.pty:
                await attachment.close_stdin()
            yield started(pid)
            interval = _keepalive_s(ctx)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ctx.timeout_ms / 1000 if ctx.timeout_ms else math.inf
            events = aiter(attachment)
            live = scrollback
            while True:
                step = asyncio.ensure_future(anext(events, None))
                try:
                    while not (await asyncio.wait({step}, timeout=min(interval, deadline - loop.time())))[0]:
                        if loop.time() >= deadline:
                            break
                        yield keepalive()
                    if loop.time() >= deadline:  # idle or not: the call's time is up
                        raise ExecTimeout(f"process {pid} ran past the call's deadline")
                finally:
                    if not step.done():
                        step.cancel()
                event = step.result()
                if event is None:
                    return
                if event.stream is Stream.SCROLLBACK_END:
                    live = True
                elif event.stream is Stream.EXIT:
                    code = event.exit_code if event.exit_code is not None else -1
                    yield ended(code)
                    return
                elif live and event.data:
                    yield output(info.pty, event.stream, event.data)

    # ---- unary -----------------------------------------------------------------------

    async def list(self, request: pb.ListRequest, ctx: Context) -> pb.ListResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        sessions = await self._sessions(caller)
        return pb.ListResponse(
            processes=[
                pb.ProcessInfo(config=pb.ProcessConfig(cmd=s.cmd, args=list(s.args)), pid=pid_of(s.id))
                for s in sessions
                if s.running
            ]
        )

    async def send_input(self, request: pb.SendInputRequest, ctx: Context) -> pb.SendInputResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        info = await self._find(caller, request.process)
        await self._input(caller, info, request.input)
        return pb.SendInputResponse()

    async def stream_input(
        self, request: AsyncIterator[pb.StreamInputRequest], ctx: Context
    ) -> pb.StreamInputResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        info: SessionInfo | None = None
        async for message in request:
            match message.event:
                case Oneof(field="start", value=pb.StreamInputRequest.StartEvent() as start):
                    info = await self._find(caller, start.process)
                case Oneof(field="data", value=pb.StreamInputRequest.DataEvent() as data):
                    if info is None:
                        raise InvalidInput("the stream must start with a start event", field="event")
                    await self._input(caller, info, data.input)
        return pb.StreamInputResponse()

    async def close_stdin(self, request: pb.CloseStdinRequest, ctx: Context) -> pb.CloseStdinResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        info = await self._find(caller, request.process)
        if info.pty:
            raise InvalidInput("a PTY has no stdin to close: send Ctrl+D (0x04)", field="process")
        async with self._attached(caller, info) as attachment:
            await attachment.close_stdin()
        return pb.CloseStdinResponse()

    async def update(self, request: pb.UpdateRequest, ctx: Context) -> pb.UpdateResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        info = await self._find(caller, request.process)
        size = request.pty.size if request.pty is not None else None
        if size is None:
            raise InvalidInput("pty.size is required", field="pty.size")
        async with self._attached(caller, info) as attachment:
            await attachment.resize(size.cols, size.rows)
        return pb.UpdateResponse()

    async def send_signal(self, request: pb.SendSignalRequest, ctx: Context) -> pb.SendSignalResponse:
        caller, _ = await self.calls.of(ctx.request_headers)
        info = await self._find(caller, request.process)
        signal = int(request.signal.value) if request.signal is not None else 0
        if signal not in (9, 15):
            raise InvalidInput("signal must be SIGKILL or SIGTERM", field="signal")
        await self.calls.core.commands.kill_session(caller.principal, caller.sandbox_id, info.id, signal)
        return pb.SendSignalResponse()

    # ---- helpers ---------------------------------------------------------------------

    @asynccontextmanager
    async def _streaming(
        self, caller: Caller, info: SessionInfo, attachment: Attachment
    ) -> AsyncIterator[None]:
        """``attachment`` is the one input goes through while the block runs."""
        key = (caller.sandbox_id, info.id)
        self.streams.setdefault(key, []).append(attachment)
        try:
            yield
        finally:
            self.streams[key].remove(attachment)
            if not self.streams[key]:
                del self.streams[key]

    @asynccontextmanager
    async def _attached(self, caller: Caller, info: SessionInfo) -> AsyncIterator[Attachment]:
        """The attachment of an open stream of the process, else one of its own."""
        open_streams = self.streams.get((caller.sandbox_id, info.id))
        if open_streams:
            yield open_streams[0]
            return
        core = self.calls.core
        async with await core.commands.attach(caller.principal, caller.sandbox_id, info.id) as attachment:
            yield attachment

    async def _sessions(self, caller: Caller) -> builtins.list[SessionInfo]:
        processes = await self.calls.core.sandboxes.processes_of(caller.principal, caller.sandbox_id)
        return await processes.list_sessions()

    async def _find(self, caller: Caller, selector: pb.ProcessSelector | None) -> SessionInfo:
        match selector.selector if selector is not None else None:
            case Oneof(field="pid", value=int(pid)):
                for info in await self._sessions(caller):
                    if pid_of(info.id) == pid and info.running:
                        return info
                raise NotFound(f"process with pid {pid} not found")
            case Oneof(field="tag", value=tag):
                raise NotFound(f"process with tag {tag} not found")
        raise InvalidInput("process: a pid is required", field="process")

    async def _input(self, caller: Caller, info: SessionInfo, given: pb.ProcessInput | None) -> None:
        match given.input if given is not None else None:
            case Oneof(field="stdin" | "pty", value=bytes(data)):
                async with self._attached(caller, info) as attachment:
                    await attachment.send_stdin(bytes(data))
            case _:
                raise InvalidInput("input: stdin or pty bytes are required", field="input")


def keepalive() -> pb.ProcessEvent:
    ping: Oneof[Literal["keepalive"], pb.ProcessEvent.KeepAlive] = Oneof(
        "keepalive", pb.ProcessEvent.KeepAlive()
    )
    return pb.ProcessEvent(event=ping)


def started(pid: int) -> pb.ProcessEvent:
    start: Oneof[Literal["start"], pb.ProcessEvent.StartEvent] = Oneof(
        "start", pb.ProcessEvent.StartEvent(pid=pid)
    )
    return pb.ProcessEvent(event=start)


def ended(code: int) -> pb.ProcessEvent:
    end: Oneof[Literal["end"], pb.ProcessEvent.EndEvent] = Oneof(
        "end", pb.ProcessEvent.EndEvent(exit_code=code, exited=True, status=f"exit status {code}")
    )
    return pb.ProcessEvent(event=end)


def output(pty: bool, stream: Stream, data: bytes) -> pb.ProcessEvent:
    """A ``data`` event: ``pty`` for a PTY's output, else ``stdout`` or ``stderr``."""
    chunk: Oneof[Literal["stdout", "stderr", "pty"], bytes] = Oneof(
        "pty" if pty else "stdout" if stream is Stream.STDOUT else "stderr", data
    )
    event: Oneof[Literal["data"], pb.ProcessEvent.DataEvent] = Oneof(
        "data",
        pb.ProcessEvent.DataEvent(output=chunk),  # type: ignore[arg-type]  # one of three literals
    )
    return pb.ProcessEvent(event=event)


def _keepalive_s(ctx: Context) -> float:
    try:
        seconds = float(ctx.request_headers.get(KEEPALIVE_HEADER) or DEFAULT_KEEPALIVE_S)
    except ValueError:
        return DEFAULT_KEEPALIVE_S
    return min(max(seconds, 1.0), 3600.0)
