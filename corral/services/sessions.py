"""Code sessions (spec 001): a program run once in a fresh sandbox, then torn down.

Contracts:
- Reads need ``sessions:read``, ``create`` and ``delete`` need ``sessions:write``
  (Forbidden otherwise: a viewer cannot create); another org's session, or an unknown
  id, is NotFound.
- ``create`` validates everything it can before answering (InvalidInput naming the
  field), writes the session ``pending`` and returns it; the run goes on in the
  background: a slot of the admission queue (``session_queue.py``: it waits, never
  fails, while a ceiling is reached), a sandbox of the language's template with the
  session's limits and egress policy (``deny_all`` by default), the program
  (``runner.py``), the result, then the teardown: the sandbox killed, its bindings
  closed, ``torn_down`` last. With the default limits the sandbox is a standby one
  (``bounds_of``, ``quota_of``; services/standby.py), its egress policy applied when
  taken; while a session runs, background work steps aside (``priority.serving``).
  The sandbox is marked with the session's id
  (``SESSION_MARK`` in its metadata), so a crash leaves nothing ``reconcile`` cannot
  find.
- Every step is in the audit trail under the session's id, in order:
  ``session_created``, ``sandbox_started``, ``credential_issued`` (the binding URLs
  it was given: their names only), the sandbox's own ``egress_allowed``,
  ``egress_denied`` and ``binding_invoked`` records (copied under the session's id as
  the host's enforcement records them), ``workload_exited``, ``quota_killed`` (its
  ``reason``), ``result_collected``, ``session_torn_down``.
- ``frames`` follows the session's stream from its first frame (phase, stdout,
  stderr, audit, result, end): live while it runs, whole for a late reader, ended
  after ``end``. The frames of the last ``KEEP_ENDED`` ended sessions stay in memory;
  an older session's stream is rebuilt from the store (phase, audit, result, end; its
  output is in the result).
- ``delete`` ends the session at any phase (a program running is killed: ``killed``,
  error ``deleted``; a pending one never starts) and returns once it is torn down.
- ``reconcile`` (at start-up) finishes what a crash left: a session not torn down is
  ended (``failed``, error saying where the crash found it, unless it already had its
  outcome), its sandbox killed, and every sandbox marked with a session's id that no
  live session of this process owns is killed.
- When a session with a ``webhookUrl`` ends, ``{session, result}`` is delivered there
  in the background; a failure changes nothing of the session.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from corral import priority
from corral.auth.principal import Principal, Role
from corral.auth.scopes import Scope, require
from corral.clock import SYSTEM, Clock
from corral.domain import Event, Sandbox, SandboxStatus
from corral.domain.session_json import result_json, session_json
from corral.domain.sessions import (
    CodeSession,
    Frame,
    LimitBounds,
    Phase,
    SessionLimits,
    SessionRequest,
    SessionResult,
)
from corral.errors import Conflict, CorralError, InvalidInput, NoRoom, NotFound
from corral.ids import is_valid, new_id
from corral.services.audit import AuditService
from corral.services.runner import TEMPLATES, Runner, RunOutcome
from corral.services.sandboxes import CreateSandbox, SandboxService
from corral.services.session_frames import FrameLog
from corral.services.session_queue import SessionQueue
from corral.settings import Settings

log = logging.getLogger("corral.sessions")

SESSION_MARK = "corral.session"  # metadata key of a session's sandbox: the session's id
KEEP_ENDED = 32  # ended sessions whose frames stay in memory
MAX_PAGE = 100
COPIED = frozenset({"egress_allowed", "egress_denied", "binding_invoked"})
SANDBOX_GRACE_S = 300  # the sandbox's idle timeout beyond the wall clock: a backstop only
ROOM_WAIT_S = 600.0  # longest a session waits for the node to have room for its sandbox
ROOM_RETRY_S = 1.0  # and how often it looks again meanwhile (other sandboxes end too)


class SessionStore(Protocol):
    """Where sessions are kept (``corral.store.sessions.SqlSessionStore``)."""

    async def add(self, session: CodeSession) -> None: ...

    async def update(self, session: CodeSession) -> None: ...

    async def get(self, org_id: str, session_id: str) -> CodeSession:
        """NotFound for an unknown id or another org's session."""

    async def page(self, org_id: str, limit: int, cursor: int | None) -> tuple[list[CodeSession], int | None]:
        """Newest first, and the cursor of the next page (None at the end)."""

    async def unfinished(self) -> list[CodeSession]:
        """Sessions of every org not yet torn down."""


class Bindings(Protocol):
    """Service bindings of a sandbox (``corral.services.bindings.BindingService``)."""

    async def check(self, org_id: str, names: Sequence[str]) -> Sequence[object]:
        """InvalidInput naming ``serviceBindings`` for a name ``open_for`` would refuse."""

    async def open_for(self, org_id: str, sandbox_id: str, names: Sequence[str]) -> dict[str, str]: ...

    async def close_for(self, sandbox_id: str) -> None: ...


class Webhooks(Protocol):
    """``corral.services.webhooks.WebhookService``."""

    def check_url(self, url: str) -> str: ...

    def deliver(
        self, url: str, payload: Mapping[str, object], *, org_id: str, sandbox_id: str | None = None
    ) -> None: ...


@dataclass
class _Live:
    session: CodeSession
    frames: FrameLog = field(default_factory=FrameLog)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False
    task: asyncio.Task[None] | None = None  # its run


def bounds_of(settings: Settings) -> LimitBounds:
    """What a session's limits may ask for on this server. Its default memory and pids
    are a sandbox's (``default_memory_mb``, ``pids_limit``), as its default CPU count is,
    so a session asking for no limits takes a standby sandbox (services/standby.py)."""
    return LimitBounds(
        max_memory_mib=settings.max_memory_mb,
        max_cpus=settings.max_cpu_count,
        max_pids=settings.pids_limit,
        max_wall_clock_s=settings.session_max_wall_clock_s,
        default_memory_mib=settings.default_memory_mb,
        default_pids=settings.pids_limit,
    )


def quota_of(limits: SessionLimits) -> float | None:
    """The CPU-time quota the runtime is given: none when ``cpu_seconds`` is at least the
    wall clock times the CPUs (the default), which the program cannot use up before its
    wall clock ends it (the runner still watches it); a sandbox with no quota may be a
    standby one."""
    return limits.cpu_seconds if limits.cpu_seconds < limits.wall_clock_s * limits.cpus else None


class SessionService:
    def __init__(
        self,
        store: SessionStore,
        sandboxes: SandboxService,
        runner: Runner,
        audit: AuditService,
        queue: SessionQueue,
        bounds: LimitBounds,
        *,
        bindings: Bindings | None = None,
        webhooks: Webhooks | None = None,
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.sandboxes = sandboxes
        self.runner = runner
        self.audit = audit
        self.queue = queue
        self.bounds = bounds  # what a request's limits may ask for (the settings')
        self.bindings = bindings
        self.webhooks = webhooks
        self.clock = clock
        self._live: dict[str, _Live] = {}  # by session id, until torn down
        self._of_sandbox: dict[str, str] = {}  # sandbox id -> session id, while it runs
        self._ended: OrderedDict[str, FrameLog] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._room = asyncio.Event()  # set (and replaced) each time a session is torn down
        audit.listeners.append(self._on_record)

    # ---- the API ---------------------------------------------------------------------

    async def create(self, principal: Principal, req: SessionRequest) -> CodeSession:
        require(principal, Scope.SESSIONS_WRITE)
        await self._check_bindings(principal.org_id, req.bindings)
        if req.webhook_url is not None:
            if self.webhooks is None:
                raise InvalidInput("this server sends no webhooks", field="webhookUrl")
            self.webhooks.check_url(req.webhook_url)
        session = CodeSession(
            id=new_id("se"),
            org_id=principal.org_id,
            created_by=principal.user_id or principal.key_id or principal.org_id,
            phase=Phase.PENDING,
            language=req.language,
            limits=req.limits,
            egress=req.egress,
            created_at=self.clock.now(),
            labels=dict(req.labels),
            bindings=req.bindings,
            webhook_url=req.webhook_url,
        )
        await self.store.add(session)
        live = self._live[session.id] = _Live(session)
        live.frames.add("phase", session.created_at, {"phase": Phase.PENDING})
        await self._record(live, principal, "session_created", language=req.language.value)
        live.task = self._spawn(self._run(live, principal.as_developer(), req.code), f"session-{session.id}")
        return session

    async def _check_bindings(self, org_id: str, names: Sequence[str]) -> None:
        if not names:
            return
        if self.bindings is None:
            raise InvalidInput("this server has no service bindings", field="serviceBindings")
        await self.bindings.check(org_id, names)

    async def list(
        self, principal: Principal, limit: int = 20, cursor: str | None = None
    ) -> tuple[builtins.list[CodeSession], str | None]:
        """The org's sessions, newest first; and the cursor of the next page."""
        require(principal, Scope.SESSIONS_READ)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
        if cursor is not None and (not cursor.isdigit() or len(cursor) > 18):
            raise InvalidInput("cursor must be the nextCursor of an earlier page", field="cursor")
        found, after = await self.store.page(principal.org_id, limit, int(cursor) if cursor else None)
        return [self._current(s) for s in found], str(after) if after is not None else None

    async def get(self, principal: Principal, session_id: str) -> CodeSession:
        require(principal, Scope.SESSIONS_READ)
        return await self._visible(principal, session_id)

    async def result(self, principal: Principal, session_id: str) -> SessionResult:
        """Conflict until the session has its outcome."""
        session = await self.get(principal, session_id)
        if session.result is None:
            if session.phase.terminal:
                raise Conflict(f"session {session_id} ended without a result: {session.error}")
            raise Conflict(f"session {session_id} is {session.phase.value}: no result yet")
        return session.result

    async def trail(self, principal: Principal, session_id: str) -> builtins.list[Event]:
        """The session's audit trail, oldest first."""
        return await self._events(await self.get(principal, session_id))

    async def _events(self, session: CodeSession) -> builtins.list[Event]:
        events: builtins.list[Event] = []
        cursor: str | None = None
        while True:
            page = await self.audit.trail(session.org_id, session.id, cursor=cursor)
            events.extend(page.events)
            if page.next_cursor is None:
                return events
            cursor = str(page.next_cursor)

    async def frames(self, principal: Principal, session_id: str) -> AsyncIterator[Frame]:
        """The session's stream from its first frame (see the module docstring); the
        checks are made before the first frame is asked for."""
        session = await self.get(principal, session_id)
        live = self._live.get(session.id)
        log_ = live.frames if live is not None else self._ended.get(session.id)
        if log_ is not None:
            return log_.follow()
        return self._rebuilt(session)

    async def delete(self, principal: Principal, session_id: str) -> CodeSession:
        """End the session at any phase; returns it torn down (idempotent)."""
        require(principal, Scope.SESSIONS_WRITE)
        session = await self._visible(principal, session_id)
        live = self._live.get(session.id)
        if live is None:
            return session
        live.stop.set()
        if not live.admitted and live.task is not None:
            live.task.cancel()  # still waiting for a slot: it never starts
        await live.done.wait()
        return live.session

    # ---- the run ---------------------------------------------------------------------

    async def _run(self, live: _Live, actor: Principal, code: str) -> None:
        try:
            async with self.queue.slot(live.session.org_id):
                live.admitted = True
                with priority.serving():  # a client waits for it: background work steps aside
                    await self._execute(live, actor, code)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if live.admitted or task is None:
                raise
            task.uncancel()  # deleted while pending: it never starts
            await self._finish(live, actor, Phase.KILLED, None, error="deleted")
        finally:
            live.done.set()

    async def _execute(self, live: _Live, actor: Principal, code: str) -> None:
        session = live.session
        sandbox_id: str | None = None
        outcome: RunOutcome | None = None
        error: str | None = None
        try:
            if live.stop.is_set():
                raise _Deleted()
            limits = session.limits
            sandbox = await self._create_when_room(
                live,
                actor,
                CreateSandbox(
                    template=TEMPLATES[session.language],
                    cpu_count=limits.cpus,
                    memory_mb=limits.memory_mib,
                    pids=limits.pids,
                    cpu_seconds=quota_of(limits),
                    timeout_s=limits.wall_clock_s + SANDBOX_GRACE_S,
                    metadata={SESSION_MARK: session.id},
                    egress=session.egress,
                ),
            )
            sandbox_id = sandbox.id
            live.session = replace(live.session, sandbox_id=sandbox_id)
            self._of_sandbox[sandbox_id] = session.id
            await self._record(live, None, "sandbox_started", sandbox=sandbox_id, template=sandbox.template)
            if live.stop.is_set():
                raise _Deleted()
            envs = {"ENCLAVE_SESSION_ID": session.id}
            if session.bindings and self.bindings is not None:
                urls = await self.bindings.open_for(session.org_id, sandbox_id, session.bindings)
                envs |= {f"ENCLAVE_SVC_{name.upper()}": url for name, url in urls.items()}
                # the URLs hold a token of the sandbox's for the forwarder (never the secret)
                await self._record(live, None, "credential_issued", bindings=sorted(urls))
            await self._phase(live, Phase.RUNNING, started_at=self.clock.now())
            outcome = await self.runner.run(
                actor,
                sandbox_id,
                code,
                session.language,
                limits,
                envs,
                lambda stream, text: live.frames.add(stream, self.clock.now(), {"chunk": text}),
                live.stop,
            )
        except _Deleted:
            error = "deleted"
        except CorralError as exc:
            log.warning("session %s could not run: %s", session.id, exc.message)
            error = exc.message
        phase, result = await self._outcome(live, outcome, error)
        await asyncio.shield(self._finish(live, actor, phase, result, error=error or _stopped(outcome)))

    async def _create_when_room(self, live: _Live, actor: Principal, request: CreateSandbox) -> Sandbox:
        """The session's sandbox; while the node (or the org) has no room for it, the
        session waits, still ``pending``, and tries again when another session is torn
        down (or every ``ROOM_RETRY_S``: other sandboxes end too), at most
        ``ROOM_WAIT_S``: a burst of sessions over what the node may promise waits
        instead of failing."""
        deadline = self.clock.monotonic() + ROOM_WAIT_S
        while True:
            room = self._room
            try:
                return await self.sandboxes.create(actor, request)
            except NoRoom:
                if live.stop.is_set() or self.clock.monotonic() >= deadline:
                    raise
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(room.wait(), ROOM_RETRY_S)
            if live.stop.is_set():
                raise _Deleted()

    async def _outcome(
        self, live: _Live, outcome: RunOutcome | None, error: str | None
    ) -> tuple[Phase, SessionResult | None]:
        if outcome is None:
            return (Phase.KILLED if error == "deleted" else Phase.FAILED), None
        await self._record(live, None, "workload_exited", exitCode=outcome.exit_code)
        if outcome.kill_reason is not None:
            await self._record(live, None, "quota_killed", reason=outcome.kill_reason.value)
        result = SessionResult(
            exit_code=outcome.exit_code,
            result=outcome.result,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            kill_reason=outcome.kill_reason,
            duration_ms=outcome.duration_ms,
            stdout_truncated=outcome.stdout_truncated,
            stderr_truncated=outcome.stderr_truncated,
        )
        await self._record(live, None, "result_collected", exitCode=outcome.exit_code)
        if outcome.kill_reason is not None or outcome.stopped:
            return Phase.KILLED, result
        return (Phase.SUCCEEDED if outcome.exit_code == 0 else Phase.FAILED), result

    async def _finish(
        self, live: _Live, actor: Principal, phase: Phase, result: SessionResult | None, *, error: str | None
    ) -> None:
        """The outcome recorded, then the teardown, then ``torn_down`` and the end."""
        session = live.session
        now = self.clock.now()
        reason = result.kill_reason if result is not None else None
        if result is not None:
            live.frames.add("result", now, {"result": result})
        await self._phase(
            live, phase, outcome=phase, result=result, kill_reason=reason, error=error, finished_at=now
        )
        await self._teardown(actor, live.session.sandbox_id)
        self._room.set()  # sessions waiting for room try again
        self._room = asyncio.Event()
        await self._record(live, None, "session_torn_down")
        await self._phase(live, Phase.TORN_DOWN)
        live.frames.add("end", self.clock.now(), {"phase": phase})
        live.frames.close()
        self._live.pop(session.id, None)
        self._ended[session.id] = live.frames
        while len(self._ended) > KEEP_ENDED:
            self._ended.popitem(last=False)
        if session.webhook_url and self.webhooks is not None:
            ended = live.session
            payload = {
                "session": session_json(ended, self.sandboxes.runtime.name),
                "result": result_json(ended.result) if ended.result else None,
            }
            self.webhooks.deliver(session.webhook_url, payload, org_id=ended.org_id, sandbox_id=ended.id)

    async def _teardown(self, actor: Principal, sandbox_id: str | None) -> None:
        """The sandbox and its bindings gone (whatever fails, the rest is done)."""
        if sandbox_id is None:
            return
        self._of_sandbox.pop(sandbox_id, None)
        if self.bindings is not None:
            try:
                await self.bindings.close_for(sandbox_id)
            except CorralError as exc:
                log.warning("closing the bindings of %s failed: %s", sandbox_id, exc.message)
        try:
            await self.sandboxes.kill(actor, sandbox_id)
        except NotFound:
            pass
        except CorralError as exc:  # reconcile's reclaim removes what is left
            log.warning("killing %s failed: %s", sandbox_id, exc.message)

    # ---- reconcile and shutdown ------------------------------------------------------

    async def reconcile(self) -> builtins.list[str]:
        """End every session a crash left and kill every session sandbox no live
        session owns (see the module docstring); the ids of the sessions ended."""
        ended: builtins.list[str] = []
        for session in await self.store.unfinished():
            if session.id in self._live:
                continue
            live = _Live(session)
            actor = Principal(org_id=session.org_id, role=Role.DEVELOPER)
            if session.outcome is None:
                where = "pending" if session.phase is Phase.PENDING else "running"
                await self._finish(
                    live, actor, Phase.FAILED, None, error=f"corral restarted while it was {where}"
                )
            else:
                await self._finish(live, actor, session.outcome, session.result, error=session.error)
            ended.append(session.id)
        for sandbox in await self.sandboxes.store.list_all(live_only=False):
            owner = sandbox.metadata.get(SESSION_MARK)
            kept = sandbox.live or sandbox.status is SandboxStatus.HIBERNATED
            if owner is None or owner in self._live or not kept:
                continue
            await self._teardown(Principal(org_id=sandbox.org_id, role=Role.DEVELOPER), sandbox.id)
        return ended

    async def close(self) -> None:
        """Stop every session of this process and wait for their teardowns (a clean
        shutdown leaves no session sandbox behind)."""
        running = list(self._live.values())
        for live in running:
            live.stop.set()
            if not live.admitted and live.task is not None:
                live.task.cancel()  # never started
        for live in running:
            await live.done.wait()

    # ---- helpers ---------------------------------------------------------------------

    async def _visible(self, principal: Principal, session_id: str) -> CodeSession:
        if not is_valid(session_id, "se") or principal.sandbox_id is not None:
            raise NotFound(f"session {session_id} not found")
        live = self._live.get(session_id)
        if live is not None:
            if live.session.org_id != principal.org_id:
                raise NotFound(f"session {session_id} not found")
            return live.session
        return await self.store.get(principal.org_id, session_id)

    def _current(self, session: CodeSession) -> CodeSession:
        live = self._live.get(session.id)
        return live.session if live is not None else session

    async def _phase(self, live: _Live, phase: Phase, **changes: Any) -> None:
        live.session = replace(live.session, phase=phase, **changes)
        await self.store.update(live.session)
        live.frames.add("phase", self.clock.now(), {"phase": phase})

    async def _record(self, live: _Live, principal: Principal | None, kind: str, **data: object) -> None:
        """A record of the session's trail (its ``audit`` frame follows from
        ``_on_record``)."""
        await self.audit.record(
            kind,
            org_id=live.session.org_id,
            sandbox_id=live.session.id,
            key_id=principal.key_id if principal else None,
            client_id=principal.client_id if principal else None,
            data=data,
        )

    def _on_record(self, event: Event) -> None:
        """Every record made: a session's own becomes its ``audit`` frame; one of the
        host's about a session's sandbox is copied under the session's id."""
        if event.sandbox_id is None:
            return
        live = self._live.get(event.sandbox_id)
        if live is not None:
            live.frames.add("audit", event.at, {"event": event})
            return
        owner = self._of_sandbox.get(event.sandbox_id)
        if owner is not None and event.kind in COPIED and owner in self._live:
            copy = self.audit.record(
                event.kind,
                org_id=event.org_id,
                sandbox_id=owner,
                data={**event.data, "sandbox": event.sandbox_id},
            )
            self._spawn(copy, f"audit-copy-{owner}")

    async def _rebuilt(self, session: CodeSession) -> AsyncIterator[Frame]:
        """The stream of a session whose frames are no longer in memory."""
        yield Frame("phase", session.created_at, {"phase": Phase.PENDING})
        for event in await self._events(session):
            yield Frame("audit", event.at, {"event": event})
        ended = session.finished_at or session.created_at
        if session.result is not None:
            yield Frame("result", ended, {"result": session.result})
        yield Frame("phase", ended, {"phase": session.phase})
        yield Frame("end", ended, {"phase": session.outcome or session.phase})

    def _spawn(self, work: Awaitable[None], name: str) -> asyncio.Task[None]:
        async def run() -> None:
            await work

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


class _Deleted(Exception):
    """A delete came before the sandbox was made."""


def _stopped(outcome: RunOutcome | None) -> str | None:
    return "deleted" if outcome is not None and outcome.stopped else None
