"""Compute sessions (the Copass surface, corral/api/copass): sandboxes of the caller's
org, grouped in namespaces the caller names, each stopped and removed at its deadline.

Contracts:
- A session is a sandbox of the principal's org and its id is the sandbox's id (so the
  gateway reaches it as any sandbox). Its namespace (Copass's ``sandbox_id``) and its
  creator (``Principal.subject``) are labels in the sandbox's metadata (``NAMESPACE``,
  ``CREATOR``); the caller's own metadata sits beside them and may not use them, nor
  Copass's reserved keys (``RESERVED``): InvalidInput naming ``metadata``.
- A session of another namespace, of another org, or no sandbox of a session is
  NotFound, the same for each.
- ``create``: ``lifetime_s`` (1 to ``MAX_LIFETIME_S``) becomes the sandbox's deadline
  (``Sandbox.deadline_at``: the core's reaper stops and removes it then); no idle
  timeout. At most ``compute_sessions_per_user`` live sessions per creator (Conflict);
  the kill switch refuses it (Forbidden, checked first; the core's own check stays).
  It is the core's all-or-nothing create, so an error leaves no sandbox behind, and
  nothing that can fail follows it: a create that answers an error made nothing, so a
  client may repeat it.
- ``exec``: argv (non-empty), ``stdin``, a timeout (default ``EXEC_DEFAULT_S``, at most
  ``MAX_LIFETIME_S``) cut to what is left of the session's life but ``DEADLINE_MARGIN_S``
  (so the command is ended, and answered, before its sandbox is; with less left than
  that: Conflict); a timeout is a result (exit code 124). Output is capped at ``OUTPUT_CAP`` bytes combined, stdout first
  (``truncated``); ``elapsed_ms`` is measured around the command. Activity is recorded
  (``last_active_at``), as the gateway records its traffic.
- ``stop`` is idempotent: a stopped session stays stopped.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass

from corral.auth.principal import Principal
from corral.domain import ExecRequest, ExecResult, Sandbox, SandboxStatus
from corral.errors import Conflict, Forbidden, InvalidInput, NotFound
from corral.services.commands import CommandService
from corral.services.kill_switch import KillSwitch
from corral.services.sandboxes import CreateSandbox, SandboxService, check_envs, default_limits

NAMESPACE = "copass.sandbox_id"
CREATOR = "copass.user_id"
RESERVED = frozenset({"user_id", "sandbox_id", "agent_id", "run_id"})
DEFAULT_LIFETIME_S = 300
MAX_LIFETIME_S = 3600
EXEC_DEFAULT_S = 60
DEADLINE_MARGIN_S = 1.0  # an exec ends this long before its session's deadline at the latest
OUTPUT_CAP = 10 * 1024 * 1024  # stdout and stderr together
MAX_NAMESPACE = 256


@dataclass(frozen=True)
class NewSession:
    template: str
    env_vars: dict[str, str]
    metadata: dict[str, str]
    lifetime_s: int | None = None  # None: DEFAULT_LIFETIME_S


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    stdin: str | None = None
    timeout_s: int | None = None  # None: EXEC_DEFAULT_S


@dataclass(frozen=True)
class Executed:
    result: ExecResult
    elapsed_ms: int


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    cpu_count: int
    memory_mb: int


class ComputeService:
    def __init__(
        self, sandboxes: SandboxService, commands: CommandService, kill_switch: KillSwitch, per_user: int
    ) -> None:
        self.sandboxes = sandboxes
        self.commands = commands
        self.kill_switch = kill_switch
        self.per_user = per_user  # 0: no cap
        self._creating: dict[str, asyncio.Lock] = {}  # creator -> its cap's lock

    async def templates(self, principal: Principal) -> list[TemplateInfo]:
        """The templates the org may start (built-ins and its own), with the limits a
        session gets."""
        limits = default_limits(self.sandboxes.settings)
        names = await self.sandboxes.names.usable(principal.org_id)
        return [TemplateInfo(name, limits.cpu_count, limits.memory_mb) for name in sorted(names)]

    async def create(self, principal: Principal, namespace: str, new: NewSession) -> Sandbox:
        _check_namespace(namespace)
        lifetime = DEFAULT_LIFETIME_S if new.lifetime_s is None else new.lifetime_s
        if not 1 <= lifetime <= MAX_LIFETIME_S:
            raise InvalidInput(
                f"timeout_seconds must be between 1 and {MAX_LIFETIME_S}", field="timeout_seconds"
            )
        for key in new.metadata:
            if key in RESERVED or key.startswith("copass."):
                raise InvalidInput(f"metadata: the key {key!r} is reserved", field="metadata")
        envs = check_envs(new.env_vars, "env_vars")
        if self.kill_switch.engaged(principal.org_id):
            raise Forbidden("compute is switched off (kill switch engaged)")
        creator = principal.subject
        request = CreateSandbox(
            template=new.template,
            timeout_s=0,
            lifetime_s=lifetime,
            envs=envs,
            metadata={**new.metadata, NAMESPACE: namespace, CREATOR: creator},
        )
        async with self._creating.setdefault(creator, asyncio.Lock()):
            if self.per_user > 0:
                live = [
                    sb for sb in await self.sandboxes.list(principal) if sb.metadata.get(CREATOR) == creator
                ]
                if len(live) >= self.per_user:
                    raise Conflict(
                        f"at most {self.per_user} compute sessions at once per user; stop one first",
                        field="compute_sessions_per_user",
                    )
            return await self.sandboxes.create(principal, request)

    async def list(
        self, principal: Principal, namespace: str, *, include_stopped: bool, limit: int
    ) -> builtins.list[Sandbox]:
        """The namespace's sessions, newest first: live ones, or all with
        ``include_stopped``; at most ``limit`` (1-100)."""
        if not 1 <= limit <= 100:
            raise InvalidInput("limit must be between 1 and 100", field="limit")
        found = await self.sandboxes.list(principal, live_only=not include_stopped)
        mine = [sb for sb in found if sb.metadata.get(NAMESPACE) == namespace]
        mine.sort(key=lambda sb: sb.created_at, reverse=True)
        return mine[:limit]

    async def get(self, principal: Principal, namespace: str, session_id: str) -> Sandbox:
        sandbox = await self.sandboxes.get(principal, session_id)
        if sandbox.metadata.get(NAMESPACE) != namespace:
            raise NotFound(f"session {session_id} not found")
        return sandbox

    async def stop(self, principal: Principal, namespace: str, session_id: str) -> None:
        await self.get(principal, namespace, session_id)
        await self.sandboxes.kill(principal, session_id)

    async def exec(self, principal: Principal, namespace: str, session_id: str, command: Command) -> Executed:
        if not command.argv or not command.argv[0]:
            raise InvalidInput("cmd must be a non-empty list of strings", field="cmd")
        asked = EXEC_DEFAULT_S if command.timeout_s is None else command.timeout_s
        if not 1 <= asked <= MAX_LIFETIME_S:
            raise InvalidInput(
                f"timeout_seconds must be between 1 and {MAX_LIFETIME_S}", field="timeout_seconds"
            )
        sandbox = await self.get(principal, namespace, session_id)
        clock = self.sandboxes.clock
        left = (sandbox.deadline_at - clock.now()).total_seconds() if sandbox.deadline_at else float(asked)
        usable = sandbox.status in (SandboxStatus.RUNNING, SandboxStatus.PAUSED)  # a paused one resumes
        if not usable or left <= 0:
            raise Conflict(f"session {session_id} is {_ended(sandbox)}")
        if left <= DEADLINE_MARGIN_S:
            raise Conflict(f"session {session_id} stops in less than {DEADLINE_MARGIN_S:g} s")
        request = ExecRequest(
            cmd=command.argv[0],
            args=command.argv[1:],
            timeout_s=min(float(asked), left - DEADLINE_MARGIN_S),
            stdin=None if command.stdin is None else command.stdin.encode("utf-8", "surrogateescape"),
        )
        started = clock.monotonic()
        result = await self.commands.run(principal, session_id, request)
        elapsed_ms = max(0, round((clock.monotonic() - started) * 1000))
        return Executed(_capped(result), elapsed_ms)


def _check_namespace(namespace: str) -> None:
    if not namespace or len(namespace) > MAX_NAMESPACE:
        raise InvalidInput(f"sandbox_id must be 1 to {MAX_NAMESPACE} characters", field="sandbox_id")


def _ended(sandbox: Sandbox) -> str:
    return "stopped" if sandbox.live else sandbox.status.value


def _capped(result: ExecResult) -> ExecResult:
    """``result`` with at most OUTPUT_CAP bytes of output in all, stdout first."""
    if len(result.stdout) + len(result.stderr) <= OUTPUT_CAP:
        return result
    stdout = result.stdout[:OUTPUT_CAP]
    stderr = result.stderr[: OUTPUT_CAP - len(stdout)]
    return ExecResult(result.exit_code, stdout, stderr, result.timed_out, truncated=True)
