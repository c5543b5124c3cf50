"""Runner: runs a session's program once in its sandbox and says how it ended.

Inside the sandbox a ``python`` program runs with Debian's ``python3`` (template
``base``), a ``node`` program with Debian's ``nodejs`` (template ``nodejs``). A short
prelude, given on the interpreter's command line, defines a global ``enclave`` (no
import needed) whose ``enclave.result(value)`` writes ``value`` as JSON to a file of
its own (``Place.result``: written aside, then renamed; the last call wins), then runs
the program from ``Place.code`` as the main module (python: in a fresh ``__main__``
module, as ``runpy.run_path`` would, without importing runpy or json first: they
doubled python's start-up). After the program exits, corral
reads that file through the agent: what a program prints never reaches the result,
and it is passed through untouched (no marker lines). No file: the result is null.

How it ended (``RunOutcome``): the exit code (128+n for a signal n, None when the
process was lost), and a kill reason when a limit ended it:

- ``wall_clock_exceeded``: corral's own deadline, ``wallClockSeconds`` after start;
- ``pids_exceeded``: the sandbox's pids controller refused a fork (seen while it runs,
  which ends it at once, or after it exited on its own);
- ``cpu_exceeded``: the workload's CPU time reached ``cpuSeconds``;
- ``memory_exceeded``: the kernel's OOM killer killed in the sandbox's memory cgroup.

The last three are read from ``usage`` (the sandbox's cgroups, never what the sandbox
reports), polled every ``POLL_S`` while the program runs; without it only the wall
clock is enforced by corral (memory and pids are still bounded by the cgroups).
A stop request (a delete) ends the program too, with no kill reason.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from corral.auth.principal import Principal
from corral.domain import SessionSpec, Stream
from corral.domain.sessions import OUTPUT_KEPT, RESULT_KEPT, KillReason, Language, SessionLimits
from corral.domain.usage import Usage
from corral.errors import CorralError, NotFound
from corral.ports import Attachment
from corral.services.commands import CommandService
from corral.services.files import FileService

POLL_S = 0.1
EXIT_GRACE_S = 10.0  # for the process to be reaped once killed
WORK_DIR = "/tmp/.enclave"  # a run's files are in WORK_DIR/<sandbox id> (see ``Place``)
TEMPLATES = {Language.PYTHON: "base", Language.NODE: "nodejs"}
SOURCE = {Language.PYTHON: "main.py", Language.NODE: "main.js"}

PYTHON_PRELUDE = """\
import builtins, os, sys
class Enclave:
    __slots__ = ()
    def result(self, value):
        import json
        data = json.dumps(value)
        with open({result!r} + ".part", "w") as out:
            out.write(data)
        os.replace({result!r} + ".part", {result!r})
builtins.enclave = Enclave()
del Enclave
sys.stdout.reconfigure(line_buffering=True)
sys.stderr.reconfigure(line_buffering=True)
sys.argv = sys.argv[1:]
with open(sys.argv[0], "rb") as source:
    code = compile(source.read(), sys.argv[0], "exec")
main = sys.modules["__main__"] = type(sys)("__main__")
main.__file__ = sys.argv[0]
exec(code, main.__dict__)
"""

NODE_PRELUDE = """\
const fs = require("fs");
Object.defineProperty(globalThis, "enclave", {{
  value: Object.freeze({{
    result(value) {{
      const data = JSON.stringify(value === undefined ? null : value);
      fs.writeFileSync({part}, data);
      fs.renameSync({part}, {result});
    }},
  }}),
}});
require(process.argv[1]);
"""


@dataclass(frozen=True)
class Place:
    """Where a run's files are in its sandbox: a directory of its own under
    ``WORK_DIR`` (the process runtime's sandboxes share the host's /tmp), holding the
    program (``code``; the directory is the working directory) and what
    ``enclave.result`` wrote (``result``); removed once the result is read."""

    dir: str
    code: str
    result: str

    @classmethod
    def of(cls, sandbox_id: str, language: Language) -> Place:
        work = f"{WORK_DIR}/{sandbox_id}"
        return cls(work, f"{work}/{SOURCE[language]}", f"{work}/result.json")


UsageFn = Callable[[Principal, str], Awaitable[Usage]]  # SandboxService.usage
OutputFn = Callable[[str, str], None]  # (stream name, text)


@dataclass(frozen=True)
class RunOutcome:
    exit_code: int | None
    kill_reason: KillReason | None
    result: Any
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    duration_ms: int
    stopped: bool = False  # ended by a stop request


def command_of(language: Language, place: Place) -> tuple[str, tuple[str, ...]]:
    if language is Language.NODE:
        part, result = json.dumps(place.result + ".part"), json.dumps(place.result)
        return "/usr/bin/node", ("-e", NODE_PRELUDE.format(part=part, result=result), place.code)
    return "/usr/bin/python3", ("-I", "-c", PYTHON_PRELUDE.format(result=place.result), place.code)


class _Output:
    """One stream's text: decoded as it comes (UTF-8, a character split across chunks
    kept whole); the first ``OUTPUT_KEPT`` bytes are kept and streamed, the rest dropped."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.kept = bytearray()
        self.truncated = False

    def feed(self, data: bytes) -> str:
        """The text of the part of ``data`` that is kept ("" once the stream is full)."""
        room = OUTPUT_KEPT - len(self.kept)
        if len(data) > room:
            self.truncated = True
            data = data[: max(0, room)]
        self.kept += data
        return self.decoder.decode(data, final=self.truncated)


class Runner:
    def __init__(self, commands: CommandService, files: FileService, usage: UsageFn | None = None) -> None:
        self.commands = commands
        self.files = files
        self.usage = usage

    async def run(
        self,
        actor: Principal,
        sandbox_id: str,
        code: str,
        language: Language,
        limits: SessionLimits,
        envs: dict[str, str],
        on_output: OutputFn,
        stop: asyncio.Event,
    ) -> RunOutcome:
        """Run ``code`` in the running sandbox ``sandbox_id`` until it exits, a limit
        ends it or ``stop`` is set; ``on_output`` gets its output as it comes.
        CorralError when the program could not be started."""

        async def chunks() -> AsyncIterator[bytes]:
            yield code.encode()

        place = Place.of(sandbox_id, language)
        await self.files.write(actor, sandbox_id, place.code, chunks())
        cmd, args = command_of(language, place)
        spec = SessionSpec(cmd=cmd, args=args, envs=envs, cwd=place.dir)
        started = time.monotonic()
        info = await self.commands.start_session(actor, sandbox_id, spec)
        streams = {"stdout": _Output(), "stderr": _Output()}
        async with await self.commands.attach(actor, sandbox_id, info.id) as attachment:
            pump = asyncio.create_task(_pump(attachment, streams, on_output))
            try:
                reason, stopped = await self._watch(actor, sandbox_id, pump, limits, started, stop)
                if reason is not None or stopped:
                    await self._kill(actor, sandbox_id, info.id)
                try:
                    exit_code = await asyncio.wait_for(asyncio.shield(pump), EXIT_GRACE_S)
                except TimeoutError:
                    exit_code = None
            finally:
                pump.cancel()
        duration_ms = round((time.monotonic() - started) * 1000)
        if reason is None and not stopped:
            reason = await self._reason_after(actor, sandbox_id, exit_code)
        result = await self._result(actor, sandbox_id, place.result)
        await self._clear(actor, sandbox_id, place)
        return RunOutcome(
            exit_code=exit_code,
            kill_reason=reason,
            result=result,
            stdout=streams["stdout"].kept.decode(errors="replace"),
            stderr=streams["stderr"].kept.decode(errors="replace"),
            stdout_truncated=streams["stdout"].truncated,
            stderr_truncated=streams["stderr"].truncated,
            duration_ms=duration_ms,
            stopped=stopped,
        )

    async def _watch(
        self,
        actor: Principal,
        sandbox_id: str,
        pump: asyncio.Task[int | None],
        limits: SessionLimits,
        started: float,
        stop: asyncio.Event,
    ) -> tuple[KillReason | None, bool]:
        """Wait for the program to exit; (a kill reason, whether a stop came) if
        something must end it first."""
        deadline = started + limits.wall_clock_s
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return KillReason.WALL_CLOCK, False
                wait = min(left, POLL_S) if self.usage is not None else left
                await asyncio.wait({pump, stopping}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if pump.done():
                    return None, False
                if stop.is_set():
                    return None, True
                reason = await self._reason_while_running(actor, sandbox_id, limits)
                if reason is not None:
                    return reason, False
        finally:
            stopping.cancel()

    async def _read_usage(self, actor: Principal, sandbox_id: str) -> Usage | None:
        if self.usage is None:
            return None
        try:
            return await self.usage(actor, sandbox_id)
        except CorralError:
            return None

    async def _reason_while_running(
        self, actor: Principal, sandbox_id: str, limits: SessionLimits
    ) -> KillReason | None:
        used = await self._read_usage(actor, sandbox_id)
        if used is None:
            return None
        if used.pids_exceeded:
            return KillReason.PIDS
        if used.cpu_exceeded or used.cpu_seconds >= limits.cpu_seconds:
            return KillReason.CPU
        return None

    async def _reason_after(
        self, actor: Principal, sandbox_id: str, exit_code: int | None
    ) -> KillReason | None:
        """Why a program that exited on its own failed, if a limit made it: an OOM kill,
        a refused fork, its CPU-time quota (the runtime stops the sandbox for it)."""
        if exit_code == 0:
            return None
        used = await self._read_usage(actor, sandbox_id)
        if used is None:
            return None
        if used.memory_exceeded:
            return KillReason.MEMORY
        if used.pids_exceeded:
            return KillReason.PIDS
        if used.cpu_exceeded:
            return KillReason.CPU
        return None

    async def _kill(self, actor: Principal, sandbox_id: str, session_id: str) -> None:
        try:
            await self.commands.kill_session(actor, sandbox_id, session_id, signal.SIGKILL)
        except CorralError:
            pass  # exited meanwhile, or the sandbox is gone: the teardown removes the rest

    async def _clear(self, actor: Principal, sandbox_id: str, place: Place) -> None:
        """Remove the run's place (a sandbox of the process runtime would leave it in the
        host's /tmp); whatever fails, the teardown follows."""
        try:
            await self.files.remove(actor, sandbox_id, place.dir)
        except CorralError:
            pass

    async def _result(self, actor: Principal, sandbox_id: str, path: str) -> Any:
        """The JSON value the program passed to ``enclave.result`` last; None when it did
        not, or what it left there is not JSON of at most ``RESULT_KEPT`` bytes."""
        data = bytearray()
        try:
            async with await self.files.read(actor, sandbox_id, path) as chunks:
                async for chunk in chunks:
                    data += chunk
                    if len(data) > RESULT_KEPT:
                        return None
        except NotFound:
            return None
        except CorralError:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return None


async def _pump(attachment: Attachment, streams: dict[str, _Output], on_output: OutputFn) -> int | None:
    """Output to ``on_output`` as it comes; the exit code (None if the stream ended first)."""
    async for event in attachment:
        if event.stream is Stream.EXIT:
            break
        name = (
            "stdout" if event.stream is Stream.STDOUT else "stderr" if event.stream is Stream.STDERR else None
        )
        if name is not None and event.data:
            text = streams[name].feed(event.data)
            if text:
                on_output(name, text)
    else:
        return None
    return event.exit_code
