"""Commands inside a sandbox: exec run (sync and async), exec sessions, PTYs.

Contracts:
- ``run`` waits for the command; a timeout is a result (``timed_out``, exit 124),
  not an error.
- ``run_held`` answers a ``HeldResult``: its output stays counted in the server's output
  budget (``corral.services.output``) until the caller calls ``release`` (once the
  answer is sent). Output beyond the budget or the limit per stream is dropped and the
  result says ``truncated``.
- Every exec run, sync or async, takes a turn of ``turns`` (``create_queue.py``: a
  bounded number at once, orgs taking turns, each turn held at most its ``max_hold_s``)
  for the sandbox's lookup and the round trip; with the wait queue full, ``run_held`` is
  Busy (429 with a retry time) and nothing runs; an async exec then ends with that error.
- ``run_async`` returns an exec id at once; ``result`` reports it running until it
  ends. Results are kept in memory for ``RESULT_TTL_S`` after the command ends (they
  do not survive a restart of corral; the command itself is not affected); when the
  output budget runs short, the oldest finished results lose their output first
  (their exit code stays, and they say ``truncated``).
- Sessions and PTYs live in the sandbox's agent, so they outlive client disconnects
  and restarts of corral. Session ids are ``es-…``, PTY ids ``ps-…``; agent sessions
  (services/agent_sessions.py) are exec sessions ``as-…``, attached and killed here
  too, listed there (not among the exec sessions).
"""

from __future__ import annotations

import asyncio
import signal as signals
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import ExecRequest, ExecResult, PtySize, SessionInfo, SessionSpec
from corral.errors import CorralError, InvalidInput, NotFound
from corral.ids import check, new_id
from corral.ports import Attachment, Processes
from corral.services.audit import AuditKind, command_line
from corral.services.create_queue import CreateQueue
from corral.services.output import OutputBudget, OutputHold
from corral.services.sandboxes import SandboxService, check_envs
from corral.services.session_ends import SessionEnds

MAX_TIMEOUT_S = 24 * 3600
MAX_STDIN = 128 * 1024  # an exec's stdin travels in its request frame (JSON-escaped: 6x at worst)
RESULT_TTL_S = 600.0
MAX_RESULTS = 1000


@dataclass(frozen=True)
class AsyncExec:
    """State of a ``run_async`` command."""

    id: str
    sandbox_id: str
    running: bool
    result: ExecResult | None = None
    error: str | None = None


@dataclass(frozen=True)
class HeldResult:
    """A result whose output the server's budget counts until ``release()``."""

    result: ExecResult
    release: Callable[[], None]


class CommandService:
    def __init__(
        self, sandboxes: SandboxService, output: OutputBudget, turns: CreateQueue | None = None
    ) -> None:
        self.sandboxes = sandboxes
        self.output = output
        self.turns = turns or CreateQueue(0, 0)  # no bound unless given
        output.reclaimers.append(self._drop_outputs)
        self._async: dict[str, AsyncExec] = {}
        self._finished_at: dict[str, float] = {}  # in the order they ended
        self._holds: dict[str, OutputHold] = {}  # finished results' output, by exec id
        self._tasks: set[asyncio.Task[None]] = set()
        self.session_ends = SessionEnds(sandboxes.audit)

    # ---- exec run --------------------------------------------------------------------

    async def run(self, principal: Principal, sandbox_id: str, req: ExecRequest) -> ExecResult:
        """``run_held``, with the output given back to the budget at once (for callers
        that hold the result briefly)."""
        held = await self.run_held(principal, sandbox_id, req)
        held.release()
        return held.result

    async def run_held(self, principal: Principal, sandbox_id: str, req: ExecRequest) -> HeldResult:
        require(principal, Scope.SANDBOX_EXEC)
        req = check_exec(req)
        async with self.turns.turn(principal.org_id):
            agent = await self.sandboxes.processes_of(principal, sandbox_id)
            hold = self.output.hold(principal.org_id)
            try:
                result = await self._exec(principal, sandbox_id, agent, req, None, hold)
            except BaseException:
                hold.release()
                raise
        return HeldResult(result, hold.release)

    async def run_async(self, principal: Principal, sandbox_id: str, req: ExecRequest) -> str:
        require(principal, Scope.SANDBOX_EXEC)
        req = check_exec(req)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        self._expire()
        exec_id = new_id("ex")
        self._async[exec_id] = AsyncExec(exec_id, sandbox_id, running=True)

        async def go() -> None:
            hold = self.output.hold(principal.org_id)
            try:
                async with self.turns.turn(principal.org_id):
                    result = await self._exec(principal, sandbox_id, agent, req, exec_id, hold)
                self._async[exec_id] = AsyncExec(exec_id, sandbox_id, False, result=result)
                self._holds[exec_id] = hold
            except CorralError as exc:
                hold.release()
                self._async[exec_id] = AsyncExec(exec_id, sandbox_id, False, error=exc.message)
            except BaseException:
                hold.release()
                raise
            self._finished_at[exec_id] = time.monotonic()

        task = asyncio.create_task(go(), name=f"exec-{exec_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return exec_id

    async def result(self, principal: Principal, sandbox_id: str, exec_id: str) -> AsyncExec:
        await self.sandboxes.get(principal, sandbox_id)
        self._expire()
        state = self._async.get(exec_id)
        if state is None or state.sandbox_id != sandbox_id:
            raise NotFound(f"exec {exec_id} not found")
        return state

    def _expire(self) -> None:
        now = time.monotonic()
        for exec_id, ended in list(self._finished_at.items()):
            if now - ended > RESULT_TTL_S or len(self._finished_at) > MAX_RESULTS:
                self._finished_at.pop(exec_id, None)
                self._async.pop(exec_id, None)
                hold = self._holds.pop(exec_id, None)
                if hold is not None:
                    hold.release()

    def _drop_outputs(self, needed: int, org_id: str | None) -> int:
        """The output budget's reclaimer: drop the output of finished results (``org_id``'s
        when it is its share that is spent), oldest first, until ``needed`` bytes are
        back; the bytes given back."""
        freed = 0
        for exec_id in list(self._holds):
            if freed >= needed:
                break
            held = self._holds[exec_id]
            if not held.borrowed or (org_id is not None and held.org_id != org_id):
                continue  # within its floor (dropping it gives nothing back), or not the org's
            hold = self._holds.pop(exec_id)
            freed += hold.borrowed
            hold.release()
            state = self._async.get(exec_id)
            if state is not None and state.result is not None:
                dropped = replace(state.result, stdout=b"", stderr=b"", truncated=True)
                self._async[exec_id] = replace(state, result=dropped)
        return freed

    # ---- sessions --------------------------------------------------------------------

    async def start_session(
        self, principal: Principal, sandbox_id: str, spec: SessionSpec, *, prefix: str = "es"
    ) -> SessionInfo:
        require(principal, Scope.SANDBOX_EXEC)
        _check_session(spec)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        info = await agent.start_session(new_id(prefix), spec)
        await self._session_started(principal, sandbox_id, agent, info)
        return info

    async def list_sessions(self, principal: Principal, sandbox_id: str) -> list[SessionInfo]:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        return [s for s in await agent.list_sessions() if not s.pty and not s.id.startswith("as-")]

    async def attach(
        self, principal: Principal, sandbox_id: str, session_id: str
    ) -> AbstractAsyncContextManager[Attachment]:
        """Attach to an exec session (``es-``), an agent session (``as-``) or a PTY (``ps-``)."""
        require(principal, Scope.SANDBOX_EXEC)
        _check_session_id(session_id)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        return agent.attach(session_id)

    async def kill_session(
        self, principal: Principal, sandbox_id: str, session_id: str, sig: int = 9
    ) -> None:
        require(principal, Scope.SANDBOX_EXEC)
        if not 1 <= sig <= 64:
            raise InvalidInput("signal must be between 1 and 64", field="signal")
        _check_session_id(session_id)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        await agent.kill_session(session_id, sig)

    # ---- PTY -------------------------------------------------------------------------

    async def create_pty(
        self, principal: Principal, sandbox_id: str, cols: int = 80, rows: int = 24, shell: str | None = None
    ) -> SessionInfo:
        require(principal, Scope.SANDBOX_EXEC)
        size = check_size(cols, rows)
        shell = shell or "/bin/bash"
        if not shell.startswith("/") or "\0" in shell or len(shell) > 1024:
            raise InvalidInput("shell must be an absolute path", field="shell")
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        spec = SessionSpec(cmd=shell, args=("-l",), pty=size)
        info = await agent.start_session(new_id("ps"), spec)
        await self._session_started(principal, sandbox_id, agent, info)
        return info

    async def resize_pty(
        self, principal: Principal, sandbox_id: str, pty_id: str, cols: int, rows: int
    ) -> None:
        require(principal, Scope.SANDBOX_EXEC)
        size = check_size(cols, rows)
        check(pty_id, "ps", "sessionID")
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        await agent.resize_session(pty_id, size.cols, size.rows)

    async def kill_pty(self, principal: Principal, sandbox_id: str, pty_id: str) -> None:
        require(principal, Scope.SANDBOX_EXEC)
        check(pty_id, "ps", "sessionID")
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        await agent.kill_session(pty_id, signals.SIGKILL)

    # ---- the audit trail and metrics of commands -------------------------------------

    async def _exec(
        self,
        principal: Principal,
        sandbox_id: str,
        agent: Processes,
        req: ExecRequest,
        exec_id: str | None,
        hold: OutputHold,
    ) -> ExecResult:
        """Run ``req``: exec started and ended (exit code, or the error) in the audit
        trail, and its count and round trip in the metrics."""
        audit = self.sandboxes.audit
        command = command_line(req.cmd, req.args)
        await audit.record_for(principal, AuditKind.EXEC_STARTED, sandbox_id, exec=exec_id, command=command)
        started = time.perf_counter()
        result: ExecResult | None = None
        error: str | None = "cancelled"
        try:
            result = await agent.exec(req, hold)
            return result
        except CorralError as exc:
            error = exc.code
            raise
        finally:
            self.sandboxes.metrics.exec_done(time.perf_counter() - started, ok=result is not None)
            ended: dict[str, object] = {"exec": exec_id, "exit_code": result.exit_code if result else None}
            if result is None:
                ended["error"] = error
            elif result.timed_out:
                ended["timed_out"] = True
            await audit.record_for(principal, AuditKind.EXEC_ENDED, sandbox_id, **ended)

    async def _session_started(
        self, principal: Principal, sandbox_id: str, agent: Processes, info: SessionInfo
    ) -> None:
        command = command_line(info.cmd, info.args)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.EXEC_STARTED, sandbox_id, exec=info.id, command=command, pty=info.pty
        )
        self.session_ends.follow(principal, sandbox_id, agent, info.id)


def _check_session_id(session_id: str) -> None:
    check(session_id, session_id[:2] if session_id[:3] in ("ps-", "as-") else "es", "sessionID")


def check_size(cols: int, rows: int) -> PtySize:
    if not 1 <= cols <= 1000:
        raise InvalidInput("cols must be between 1 and 1000", field="cols")
    if not 1 <= rows <= 1000:
        raise InvalidInput("rows must be between 1 and 1000", field="rows")
    return PtySize(cols, rows)


def check_exec(req: ExecRequest) -> ExecRequest:
    _check_command(req.cmd, req.args, req.cwd, req.envs)
    if req.timeout_s is not None and not 0 < req.timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds", field="timeout")
    if req.stdin is not None and len(req.stdin) > MAX_STDIN:
        raise InvalidInput(f"stdin: at most {MAX_STDIN} bytes", field="stdin")
    return req


def _check_session(spec: SessionSpec) -> None:
    _check_command(spec.cmd, spec.args, spec.cwd, spec.envs)
    if spec.timeout_s is not None and not 0 < spec.timeout_s <= MAX_TIMEOUT_S:
        raise InvalidInput(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds", field="timeout")
    grace = spec.max_run_after_disconnect_s
    if grace is not None and not 0 <= grace <= MAX_TIMEOUT_S:
        raise InvalidInput("maxRunAfterDisconnect must be between 0 and 86400", field="maxRunAfterDisconnect")


def _check_command(cmd: str, args: tuple[str, ...], cwd: str | None, envs: dict[str, str]) -> None:
    if not cmd or "\0" in cmd or len(cmd) > 64 * 1024:
        raise InvalidInput("cmd must be a non-empty string", field="cmd")
    if len(args) > 4096 or any("\0" in a for a in args) or sum(map(len, args)) > 1024 * 1024:
        raise InvalidInput("args: at most 4096 strings without NUL bytes", field="args")
    if cwd is not None and (not cwd.startswith("/") or "\0" in cwd or len(cwd) > 4096):
        raise InvalidInput("cwd must be an absolute path", field="cwd")
    check_envs(envs)
