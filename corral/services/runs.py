"""Agent runs (spec 004, corral/api/runs): threads with a desktop, and runs of the
computer-use agent (services/computer_use.py) on it.

Contracts:
- Reads need ``sessions:read``; creating threads and runs, cancelling and extending
  need ``sessions:write`` (Forbidden otherwise). Another org's thread, run or sandbox
  is NotFound, as an unknown one is. A run's publicAccessToken (``RunToken``) reads
  that run and its events, nothing else (a wrong token: NotFound).
- ``create_thread`` and ``start_run`` refuse with ModelUnavailable (503) when no model
  key is configured, before storing anything; InvalidInput names the field of an empty
  or too long prompt or message (``MAX_TEXT``), a template other than ``gui`` and a
  ``duration`` out of 60..3600 s.
- ``start_run`` stores the message (user) and the run (``QUEUED``, with the sha256 of
  its token) and returns at once; the run goes on in the background, one run of a
  thread at a time (a later one waits ``QUEUED``): ``RUNNING``; the desktop (the
  thread's sandbox if it is still live: ``restored``; else a new ``gui`` sandbox of the
  thread's lifetime, marked with its id: ``initializing`` then ``ready``, or
  ``failed``), mirrored into the thread; the agent; ``COMPLETED``, or ``FAILED`` with
  the reason (the model's error, a malformed answer, the step limit, the run's
  deadline ``run_deadline_s``, a desktop that could not be provisioned), or
  ``CANCELED`` by ``cancel``. Every assistant text and action is a thread message (an
  action's status ``running`` -> ``done`` | ``failed``). The desktop is never killed by
  a run's end: it lives until its deadline.
- ``events`` follows a run from its first frame: ``status`` (the run's status),
  ``desktop`` (sandboxId, vncUrl, sandboxStatus), ``assistant`` (a text), ``action``
  (an action message, each time its status changes) and ``done`` (last). A reader that
  comes late gets every frame from the first; the frames of the last ``KEEP_ENDED``
  ended runs stay in memory, an older run's are its status and ``done``.
- ``extend`` adds ``EXTEND_S`` to the deadline of a live desktop of the caller's
  threads (calls stack); a sandbox gone or not a thread's desktop is NotFound.
- Audit: ``agent_run_started`` and ``agent_run_ended`` (status, error) under the
  desktop's sandbox, with the caller's key and X-Client-Id.
- ``reconcile`` (start-up): every run left ``QUEUED`` or ``RUNNING`` by the process
  before ends ``FAILED`` ("corral restarted while the run was ..."), its running
  actions ``failed``; ``close`` ends the live ones the same way ("corral shut down").
  No run stays ``RUNNING`` for ever.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import logging
import math
import secrets
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.clock import SYSTEM, Clock
from corral.domain import Sandbox
from corral.domain.runs import (
    ActionStatus,
    Author,
    DesktopInfo,
    DesktopStatus,
    Message,
    Prompts,
    Run,
    RunStatus,
    Thread,
    is_run_id,
    is_uuid,
    new_run_id,
    new_uuid,
)
from corral.domain.sessions import Frame
from corral.errors import Conflict, CorralError, InvalidInput, ModelUnavailable, NotFound
from corral.services.audit import AuditService
from corral.services.computer import Computer
from corral.services.computer_use import ComputerUseAgent, RunFailed
from corral.services.desktop import DESKTOP_TEMPLATE, DesktopService
from corral.services.sandboxes import CreateSandbox, SandboxService
from corral.services.session_frames import FrameLog

log = logging.getLogger("corral.runs")

TOKEN_PREFIX = "pat_"
THREAD_MARK = "corral.thread"  # metadata key of a thread's desktop: the thread's id
DESKTOP_LIFETIME_S = 900
MIN_LIFETIME_S, MAX_LIFETIME_S = 60, 3600
EXTEND_S = 900
MAX_TEXT = 32_000
KEEP_ENDED = 32
DEFAULT_SYSTEM = (
    "You operate a Linux desktop (1280x720: fluxbox, xterm, chromium) through the computer tool, "
    "as the user 'sandbox' (home /home/sandbox). Take a screenshot first; act step by step; "
    "end your turn with a short answer once the goal is met."
)


class ThreadStore(Protocol):
    """Where threads, messages and runs are kept (``corral.store.threads``; a fake in
    tests/support/threads.py)."""

    async def add_thread(self, thread: Thread) -> None: ...

    async def update_thread(self, thread: Thread) -> None: ...

    async def get_thread(self, org_id: str, thread_id: str) -> Thread:
        """NotFound for an unknown id or another org's thread."""

    async def add_message(self, message: Message) -> None: ...

    async def update_message(self, message: Message) -> None: ...

    async def messages(self, thread_id: str) -> list[Message]:
        """Oldest first."""

    async def add_run(self, run: Run) -> None: ...

    async def update_run(self, run: Run) -> None: ...

    async def get_run(self, thread_id: str, run_id: str) -> Run:
        """The thread's run, of whatever org; NotFound else."""

    async def unfinished_runs(self) -> list[Run]:
        """QUEUED or RUNNING, of every org."""


@dataclass(frozen=True)
class NewThread:
    """A create's prompts; ``fields`` names where each came from (for InvalidInput)."""

    user: str
    goal: str
    system: str | None = None
    template: str | None = None
    duration_s: int | None = None
    fields: tuple[str, str, str] = ("prompt", "prompt", "prompts.systemPrompt")


@dataclass(frozen=True)
class RunToken:
    """A run's publicAccessToken, as a reader."""

    value: str


Reader = Principal | RunToken


@dataclass(frozen=True)
class Started:
    run: Run
    token: str
    message: Message


@dataclass
class _Live:
    run: Run
    frames: FrameLog = field(default_factory=FrameLog)
    task: asyncio.Task[None] | None = None
    canceled: bool = False
    open_actions: dict[str, Message] = field(default_factory=dict)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class RunService:
    def __init__(
        self,
        store: ThreadStore,
        sandboxes: SandboxService,
        desktop: DesktopService,
        agent: ComputerUseAgent,
        audit: AuditService,
        *,
        run_deadline_s: float,
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.sandboxes = sandboxes
        self.desktop = desktop
        self.agent = agent
        self.audit = audit
        self.run_deadline_s = run_deadline_s
        self.clock = clock
        self._live: dict[str, _Live] = {}  # by run id, until it ends
        self._ended: OrderedDict[str, FrameLog] = OrderedDict()
        self._turns: dict[str, asyncio.Lock] = {}  # by thread id: one run at a time

    # ---- threads -----------------------------------------------------------------------

    async def create_thread(self, principal: Principal, new: NewThread) -> tuple[Thread, Message]:
        require(principal, Scope.SESSIONS_WRITE)
        user_field, goal_field, system_field = new.fields
        prompts = Prompts(
            _text(new.user, user_field),
            _text(new.goal, goal_field),
            None if new.system is None else _text(new.system, system_field),
        )
        if new.template not in (None, DESKTOP_TEMPLATE):
            raise InvalidInput(f"template must be {DESKTOP_TEMPLATE!r} (the desktop)", field="template")
        lifetime = DESKTOP_LIFETIME_S if new.duration_s is None else new.duration_s
        if not MIN_LIFETIME_S <= lifetime <= MAX_LIFETIME_S:
            raise InvalidInput(
                f"duration must be {MIN_LIFETIME_S} to {MAX_LIFETIME_S} seconds", field="duration"
            )
        self._require_model()
        now = self.clock.now()
        thread = Thread(new_uuid(), principal.org_id, principal.subject, prompts, lifetime, now)
        message = Message(new_uuid(), thread.id, Author.USER, prompts.user, now)
        await self.store.add_thread(thread)
        await self.store.add_message(message)
        return thread, message

    async def thread(self, principal: Principal, thread_id: str) -> tuple[Thread, builtins.list[Message]]:
        require(principal, Scope.SESSIONS_READ)
        thread = await self._thread(principal.org_id, thread_id)
        return thread, await self.store.messages(thread.id)

    # ---- runs --------------------------------------------------------------------------

    async def start_run(self, principal: Principal, thread_id: str, text: str) -> Started:
        require(principal, Scope.SESSIONS_WRITE)
        content = _text(text, "message")
        thread = await self._thread(principal.org_id, thread_id)
        self._require_model()
        now = self.clock.now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        run = Run(new_run_id(), thread.id, thread.org_id, RunStatus.QUEUED, token_hash(token), now)
        message = Message(new_uuid(), thread.id, Author.USER, content, now, run_id=run.id)
        await self.store.add_message(message)
        await self.store.add_run(run)
        live = self._live[run.id] = _Live(run)
        live.frames.add("status", now, {"status": run.status.value})
        log.info(
            "run %s of thread %s queued by %s (client %s)",
            run.id,
            thread.id,
            principal.subject,
            principal.client_id,
        )
        live.task = asyncio.create_task(self._execute(live, principal.as_developer()), name=f"run {run.id}")
        return Started(run, token, message)

    async def run(self, reader: Reader, thread_id: str, run_id: str) -> Run:
        live = self._live.get(run_id)
        found = await self._readable(reader, thread_id, run_id)
        return live.run if live is not None and live.run.thread_id == found.thread_id else found

    async def events(self, reader: Reader, thread_id: str, run_id: str) -> AsyncIterator[Frame]:
        """The run's frames (see the module docstring); checked before it returns."""
        run = await self._readable(reader, thread_id, run_id)
        live = self._live.get(run.id)
        frames = live.frames if live is not None else self._ended.get(run.id)
        if frames is None:
            frames = FrameLog()
            frames.add("status", run.finished_at or run.created_at, {"status": run.status.value})
            frames.add("done", run.finished_at or run.created_at, _done(run))
            frames.close()
        return frames.follow()

    async def cancel(self, principal: Principal, thread_id: str, run_id: str) -> Run:
        """Cancel a queued or running run (CANCELED once it has stopped); a finished
        run is returned as it is."""
        require(principal, Scope.SESSIONS_WRITE)
        run = await self._readable(principal, thread_id, run_id)
        live = self._live.get(run.id)
        if live is None or live.task is None:
            return run
        live.canceled = True
        live.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(live.task)
        return live.run

    async def extend(self, principal: Principal, sandbox_id: str) -> Sandbox:
        require(principal, Scope.SESSIONS_WRITE)
        sandbox = await self.sandboxes.get(principal, sandbox_id)
        if THREAD_MARK not in sandbox.metadata or not sandbox.live or sandbox.deadline_at is None:
            raise NotFound(f"sandbox {sandbox_id} is not the live desktop of a thread", field="sandboxId")
        left = max(0.0, (sandbox.deadline_at - self.clock.now()).total_seconds())
        try:
            return await self.sandboxes.postpone_deadline(
                principal.as_developer(), sandbox_id, math.ceil(left) + EXTEND_S
            )
        except Conflict as exc:
            raise NotFound(f"sandbox {sandbox_id} is not live", field="sandboxId") from exc

    # ---- start-up and shutdown ---------------------------------------------------------

    async def reconcile(self) -> int:
        """End every run a previous process left unfinished; how many."""
        left = await self.store.unfinished_runs()
        for run in left:
            where = "queued" if run.status is RunStatus.QUEUED else "running"
            await self._abandon(run, f"corral restarted while the run was {where}")
        return len(left)

    async def close(self) -> None:
        tasks = [live.task for live in self._live.values() if live.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- the run -----------------------------------------------------------------------

    async def _execute(self, live: _Live, actor: Principal) -> None:
        thread_id = live.run.thread_id
        turn = self._turns.setdefault(thread_id, asyncio.Lock())
        status, error = RunStatus.FAILED, "internal error"
        try:
            async with turn:
                await self._save(live, status=RunStatus.RUNNING, started_at=self.clock.now())
                try:
                    async with asyncio.timeout(self.run_deadline_s):
                        steps = await self._drive(live, actor)
                    await self._save(live, steps=steps)
                    status, error = RunStatus.COMPLETED, ""
                except TimeoutError:
                    error = f"the run's deadline passed ({self.run_deadline_s:g} s)"
                except RunFailed as exc:
                    error = str(exc)
                except CorralError as exc:
                    error = exc.message
        except asyncio.CancelledError:
            status = RunStatus.CANCELED if live.canceled else RunStatus.FAILED
            error = "canceled" if live.canceled else "corral shut down while the run was running"
        except Exception:
            log.exception("run %s failed", live.run.id)
        finally:
            await asyncio.shield(self._finish(live, actor, status, error or None))

    async def _drive(self, live: _Live, actor: Principal) -> int:
        thread = await self.store.get_thread(actor.org_id, live.run.thread_id)
        sandbox = await self._desktop_for(live, thread, actor)
        await self.audit.record_for(actor, "agent_run_started", sandbox.id, run=live.run.id, thread=thread.id)
        computer = Computer(await self.sandboxes.processes_of(actor, sandbox.id))
        conversation = _conversation(await self.store.messages(thread.id), live.run.id)
        system = thread.prompts.system or DEFAULT_SYSTEM
        if thread.prompts.goal != thread.prompts.user:
            system += f"\n\nThe goal: {thread.prompts.goal}"
        return await self.agent.drive(
            actor.org_id, sandbox.id, computer, system, conversation, _Journal(self, live)
        )

    async def _desktop_for(self, live: _Live, thread: Thread, actor: Principal) -> Sandbox:
        """The thread's desktop, reused if live (restored), else a new one."""
        if thread.desktop.sandbox_id is not None:
            with contextlib.suppress(NotFound):
                sandbox = await self.sandboxes.get(actor, thread.desktop.sandbox_id)
                if sandbox.live:
                    await self._desktop(live, thread, sandbox, DesktopStatus.RESTORED)
                    return sandbox
        await self._desktop(live, thread, None, DesktopStatus.INITIALIZING)
        request = CreateSandbox(
            template=DESKTOP_TEMPLATE,
            timeout_s=0,
            lifetime_s=thread.lifetime_s,
            metadata={THREAD_MARK: thread.id},
        )
        try:
            sandbox = await self.sandboxes.create(actor, request)
        except CorralError as exc:
            await self._desktop(live, thread, None, DesktopStatus.FAILED)
            raise RunFailed(f"the desktop could not be provisioned: {exc.message}") from exc
        await self._desktop(live, thread, sandbox, DesktopStatus.READY)
        return sandbox

    async def _desktop(
        self, live: _Live, thread: Thread, sandbox: Sandbox | None, status: DesktopStatus
    ) -> None:
        info = DesktopInfo(
            sandbox.id if sandbox else None, self.desktop.vnc_url(sandbox) if sandbox else None, status
        )
        await self.store.update_thread(replace(thread, desktop=info))
        await self._save(live, desktop=info)
        live.frames.add(
            "desktop",
            self.clock.now(),
            {"sandboxId": info.sandbox_id, "vncUrl": info.vnc_url, "sandboxStatus": status.value},
        )

    async def _save(self, live: _Live, **changes: Any) -> None:
        before = live.run.status
        live.run = replace(live.run, **changes)
        await self.store.update_run(live.run)
        if live.run.status is not before:
            live.frames.add("status", self.clock.now(), {"status": live.run.status.value})

    async def _finish(self, live: _Live, actor: Principal, status: RunStatus, error: str | None) -> None:
        now = self.clock.now()
        for message in list(live.open_actions.values()):
            await self._end_action(live, message, "the run ended before the action did")
        try:
            await self._save(live, status=status, error=error, finished_at=now)
            await self.audit.record_for(
                actor,
                "agent_run_ended",
                live.run.desktop.sandbox_id,
                run=live.run.id,
                status=status.value,
                error=error,
            )
        finally:
            live.frames.add("done", now, _done(live.run))
            live.frames.close()
            self._live.pop(live.run.id, None)
            if not any(other.run.thread_id == live.run.thread_id for other in self._live.values()):
                self._turns.pop(live.run.thread_id, None)  # no run of the thread waits on it
            self._ended[live.run.id] = live.frames
            while len(self._ended) > KEEP_ENDED:
                self._ended.popitem(last=False)
            log.info("run %s ended %s%s", live.run.id, status.value, f": {error}" if error else "")

    async def _end_action(self, live: _Live, message: Message, error: str | None) -> None:
        ended = replace(message, status=ActionStatus.FAILED if error else ActionStatus.DONE, detail=error)
        live.open_actions.pop(message.id, None)
        await self.store.update_message(ended)
        live.frames.add("action", self.clock.now(), _action(ended))

    async def _abandon(self, run: Run, reason: str) -> None:
        for message in await self.store.messages(run.thread_id):
            if message.run_id == run.id and message.status is ActionStatus.RUNNING:
                await self.store.update_message(replace(message, status=ActionStatus.FAILED, detail=reason))
        await self.store.update_run(
            replace(run, status=RunStatus.FAILED, error=reason, finished_at=self.clock.now())
        )
        log.warning("run %s: %s", run.id, reason)

    # ---- helpers -----------------------------------------------------------------------

    def _require_model(self) -> None:
        if not self.agent.model.configured:
            raise ModelUnavailable()

    async def _thread(self, org_id: str, thread_id: str) -> Thread:
        if not is_uuid(thread_id):
            raise NotFound(f"thread {thread_id[:64]} not found", field="threadId")
        return await self.store.get_thread(org_id, thread_id)

    async def _readable(self, reader: Reader, thread_id: str, run_id: str) -> Run:
        if not is_uuid(thread_id) or not is_run_id(run_id):
            raise NotFound(f"run {run_id[:64]} not found", field="runId")
        if isinstance(reader, Principal):
            require(reader, Scope.SESSIONS_READ)
            await self._thread(reader.org_id, thread_id)
            run = await self.store.get_run(thread_id, run_id)
            if run.org_id != reader.org_id:
                raise NotFound(f"run {run_id} not found", field="runId")
            return run
        run = await self.store.get_run(thread_id, run_id)
        if not hmac.compare_digest(token_hash(reader.value), run.token_hash):
            raise NotFound(f"run {run_id} not found", field="runId")
        return run


class _Journal:
    """The run's record of what the agent says and does (``computer_use.Journal``)."""

    def __init__(self, service: RunService, live: _Live) -> None:
        self.service = service
        self.live = live

    async def said(self, text: str) -> None:
        run = self.live.run
        message = Message(
            new_uuid(), run.thread_id, Author.ASSISTANT, text[:MAX_TEXT], self.service.clock.now(), run.id
        )
        await self.service.store.add_message(message)
        self.live.frames.add("assistant", message.created_at, {"id": message.id, "text": message.content})

    async def acting(self, tool_input: Mapping[str, object]) -> str:
        run = self.live.run
        action = dict(tool_input)
        message = Message(
            new_uuid(),
            run.thread_id,
            Author.ACTION,
            _describe(action),
            self.service.clock.now(),
            run.id,
            action=action,
            status=ActionStatus.RUNNING,
        )
        await self.service.store.add_message(message)
        self.live.open_actions[message.id] = message
        self.live.frames.add("action", message.created_at, _action(message))
        return message.id

    async def acted(self, message_id: str, *, error: str | None) -> None:
        message = self.live.open_actions.get(message_id)
        if message is not None:
            await self.service._end_action(self.live, message, error)


def _text(value: str, name: str) -> str:
    if not value.strip():
        raise InvalidInput(f"{name} must not be empty", field=name)
    if len(value) > MAX_TEXT:
        raise InvalidInput(f"{name} is longer than {MAX_TEXT} characters", field=name)
    return value


def _describe(action: Mapping[str, object]) -> str:
    """An action message's content: the action and its arguments, in a line."""
    args = ", ".join(f"{k}={v!r}" for k, v in action.items() if k != "action")
    return f"{action.get('action')}({args})"[:500]


def _action(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "action": message.action,
        "status": message.status.value if message.status else None,
        "detail": message.detail,
    }


def _done(run: Run) -> dict[str, Any]:
    return {"status": run.status.value, "isErrored": run.is_errored, "error": run.error}


def _conversation(messages: builtins.list[Message], run_id: str) -> builtins.list[dict[str, Any]]:
    """The Messages API conversation of a run: the thread's user and assistant texts up
    to this run's message, turns of one role merged (actions and screenshots of earlier
    runs are not replayed)."""
    turns: builtins.list[dict[str, Any]] = []
    for message in messages:
        if message.role in (Author.USER, Author.ASSISTANT):
            role = message.role.value
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + message.content
            else:
                turns.append({"role": role, "content": message.content})
        if message.run_id == run_id and message.role is Author.USER:
            break
    while turns and turns[0]["role"] != "user":
        turns.pop(0)
    return turns
