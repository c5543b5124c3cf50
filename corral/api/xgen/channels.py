"""The processes of one xgen WebSocket connection, one per client-chosen channel.

ExecStart on channel N starts a session in the sandbox as the workspace's user
(``WorkspaceService.start``), attaches to it and answers Ack ``{process_id, channel}``
on N with the request's id; its output follows as ExecStdout / ExecStderr (raw bytes,
at most ``CHUNK`` each) and, once both streams have ended, ExecExit with ``exit_code``
and ``exitCode``. A tty merges stderr into stdout. ExecStdin (its 4-byte process id
stripped), ExecResize and ExecSignal are routed by channel. An ExecStdin with no bytes
after the prefix closes the process's stdin (EOF): xgen has no message of its own for
that. A process ended by a signal this connection sent reports -1.

A channel is busy until its process exits; a second ExecStart there is an Error. When
the connection ends, the processes it started are killed (SIGKILL); should corral
itself go away first, the agent ends them ``DETACHED_GRACE_S`` after the last detach.
"""

from __future__ import annotations

import asyncio
import logging
import signal as signals
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from corral.api.xgen.frames import BadFrame, Code, Frame, Kind, encode
from corral.api.xgen.outbox import Outbox
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import PtySize, SessionSpec, Stream
from corral.errors import CorralError, InvalidInput
from corral.ports import Attachment
from corral.services import workspace

log = logging.getLogger("corral.api.xgen")

CHUNK = 64 << 10  # bytes of one ExecStdout/ExecStderr frame, at most
DETACHED_GRACE_S = 30.0
MAX_PROCESSES = 64  # running at once on one connection


@dataclass
class Process:
    session_id: str
    pty: bool
    attachment: Attachment | None = None
    signalled: bool = False
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # attached (or failed)


def exec_spec(body: dict[str, Any], channel: int, id: int) -> SessionSpec:
    """The session an ExecStart asks for; BadFrame naming the field."""

    def bad(message: str) -> BadFrame:
        return BadFrame(Code.INVALID_PAYLOAD, f"ExecStart: {message}", channel, id)

    command = body.get("command")
    if not isinstance(command, str) or not command:
        raise bad("command must be a non-empty string")
    args = body.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise bad("args must be an array of strings")
    env = body.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise bad("env must be a map of strings")
    cwd = body.get("cwd") or None
    if cwd is not None and not isinstance(cwd, str):
        raise bad("cwd must be a string")
    tty = body.get("tty") or False
    if not isinstance(tty, bool):
        raise bad("tty must be a boolean")
    size = None
    if tty:
        cols, rows = body.get("cols") or 80, body.get("rows") or 24
        if (
            not isinstance(cols, int)
            or not isinstance(rows, int)
            or not (1 <= cols <= 1000 and 1 <= rows <= 1000)
        ):
            raise bad("cols and rows must be integers between 1 and 1000 (0: 80x24)")
        size = PtySize(cols, rows)
    if cwd is not None and not cwd.startswith("/"):
        cwd = workspace.path(cwd, "cwd")
    return SessionSpec(
        cmd=command,
        args=tuple(args),
        envs=dict(env),
        cwd=cwd,
        pty=size,
        max_run_after_disconnect_s=DETACHED_GRACE_S,
    )


def signal_number(body: dict[str, Any], channel: int, id: int) -> int:
    """ExecSignal's ``signal``: a name (SIGTERM, TERM) or a number."""
    value = body.get("signal")
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 64:
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        try:
            return int(signals.Signals[name if name.startswith("SIG") else f"SIG{name}"])
        except KeyError:
            pass
    raise BadFrame(Code.INVALID_PAYLOAD, f"ExecSignal: unknown signal {str(value)[:32]!r}", channel, id)


class Channels:
    """The processes of one connection (see the module docstring)."""

    def __init__(
        self,
        core: Core,
        principal: Principal,
        sandbox_id: str,
        outbox: Outbox,
        fail: Callable[[CorralError, Code, int, int], None],
    ) -> None:
        self.core, self.principal, self.sandbox_id, self.outbox = core, principal, sandbox_id, outbox
        self.fail = fail
        self.running: dict[int, Process] = {}

    async def start(self, frame: Frame) -> None:
        channel, id_ = frame.channel, frame.id
        if channel == 0:
            raise BadFrame(Code.INVALID_PAYLOAD, "ExecStart: channel 0 is the control channel", channel, id_)
        if channel in self.running:
            raise BadFrame(Code.EXEC_FAILED, f"channel {channel} has a running process", channel, id_)
        if len(self.running) >= MAX_PROCESSES:
            raise BadFrame(Code.EXEC_FAILED, f"at most {MAX_PROCESSES} processes at once", channel, id_)
        spec = exec_spec(frame.body, channel, id_)
        process = Process("", spec.pty is not None)
        self.running[channel] = process
        try:
            info = await self.core.workspace.start(self.principal, self.sandbox_id, spec)
        except BaseException:
            del self.running[channel]
            raise
        process.session_id = info.id
        process.task = asyncio.create_task(self._pump(process, channel, id_), name=f"xgen-exec-{channel}")

    async def _pump(self, process: Process, channel: int, id_: int) -> None:
        try:
            attached = await self.core.commands.attach(self.principal, self.sandbox_id, process.session_id)
            async with attached as attachment:
                process.attachment = attachment
                process.ready.set()
                await self.outbox.put(
                    encode(Kind.ACK, channel, id_, {"process_id": process.session_id, "channel": channel})
                )
                code = await self._output(attachment, channel)
            if code is not None and process.signalled and code > 128:
                code = -1
            await self.outbox.put(encode(Kind.EXEC_EXIT, channel, 0, {"exit_code": code, "exitCode": code}))
        except CorralError as exc:
            self.fail(exc, Code.EXEC_FAILED, channel, id_)
        finally:
            process.ready.set()
            if self.running.get(channel) is process:
                del self.running[channel]

    async def _output(self, attachment: Attachment, channel: int) -> int:
        """Forward output until the process exits; its exit code (-1 if the agent's
        stream ended without one)."""
        async for event in attachment:
            if event.stream == Stream.EXIT:
                return event.exit_code if event.exit_code is not None else -1
            if event.stream in (Stream.STDOUT, Stream.STDERR) and event.data:
                kind = Kind.EXEC_STDOUT if event.stream == Stream.STDOUT else Kind.EXEC_STDERR
                for start in range(0, len(event.data), CHUNK):
                    await self.outbox.put(encode(kind, channel, 0, raw=event.data[start : start + CHUNK]))
        return -1

    async def _process(self, frame: Frame) -> Process:
        process = self.running.get(frame.channel)
        if process is None:
            raise BadFrame(
                Code.EXEC_FAILED, f"no running process on channel {frame.channel}", frame.channel, frame.id
            )
        await process.ready.wait()
        return process

    async def stdin(self, frame: Frame) -> None:
        process = await self._process(frame)
        data = frame.raw[4:]
        if process.attachment is None:
            return
        await self.core.sandboxes.processes_of(self.principal, self.sandbox_id)  # a use: resumes a paused one
        if data:
            await process.attachment.send_stdin(data)
        else:
            await process.attachment.close_stdin()

    async def resize(self, frame: Frame) -> None:
        cols, rows = frame.body.get("cols"), frame.body.get("rows")
        if (
            not isinstance(cols, int)
            or not isinstance(rows, int)
            or not (1 <= cols <= 1000 and 1 <= rows <= 1000)
        ):
            raise BadFrame(
                Code.INVALID_PAYLOAD,
                "ExecResize: cols and rows must be between 1 and 1000",
                frame.channel,
                frame.id,
            )
        process = await self._process(frame)
        if process.attachment is None:
            return
        if not process.pty:
            raise InvalidInput(f"the process on channel {frame.channel} has no tty")
        await process.attachment.resize(cols, rows)

    async def signal(self, frame: Frame) -> None:
        number = signal_number(frame.body, frame.channel, frame.id)
        process = await self._process(frame)
        process.signalled = True
        await self.core.commands.kill_session(self.principal, self.sandbox_id, process.session_id, number)

    async def close(self, *, kill: bool = True) -> None:
        """Kill what this connection started and still runs (unless not ``kill``: the
        sandbox has stopped), and stop forwarding."""
        for process in list(self.running.values()):
            if process.session_id and kill:
                try:
                    await self.core.commands.kill_session(
                        self.principal, self.sandbox_id, process.session_id, 9
                    )
                except CorralError as exc:
                    log.debug("could not kill %s: %s", process.session_id, exc.message)
            if process.task is not None:
                process.task.cancel()
        tasks = [p.task for p in self.running.values() if p.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
