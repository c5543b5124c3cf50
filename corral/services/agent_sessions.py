"""OpenComputer agent sessions (spec 003, "Agent Sessions"; issue 14, item 2): a
Claude agent (the Claude Agent SDK) running inside a sandbox of the ``agent`` template.

An agent session is an exec session of the sandbox's agent with an id ``as-…``
(``CommandService``), running the template's runner (agent/claude_runner.py) with the
session's configuration: so it outlives client disconnects and restarts of corral, its
events (one JSON object a stdout line) reach clients over the exec-session WebSocket
with the agent's scrollback for a late attach, and commands (``prompt``,
``interrupt``, ``configure``) are JSON lines on its stdin, from a client or from the
routes here. The Claude session's id (``claudeSessionID``) is chosen here (a new UUID,
or ``resume``'s) and passed to the runner, so it is known from the create on, and read
back from the session's arguments when listed.

The model: the runner reaches it through the sandbox's model binding
(``ModelService.binding``, granted here at each create): ``ANTHROPIC_BASE_URL`` and
``ANTHROPIC_API_KEY`` in its environment are the forwarder's URL and a token of this
sandbox's; the key is added by the forwarder, outside. ``CLI_ENV`` turns off the Claude
Code CLI's other traffic (telemetry, error reports, updates, nonessential calls).

Contracts (the principal needs ``sandbox:exec``; ``list`` ``sandbox:read``):
- ``create``: InvalidInput naming the field for a bad configuration
  (``corral.domain.agent_config``), or ``sandboxID`` for a sandbox of another template
  than ``agent``; ModelUnavailable (503, "set CORRAL_ANTHROPIC_API_KEY") without a key;
  Conflict naming ``sandboxID`` for a sandbox that is not running (a hibernated one is
  woken); NotFound for another org's. Nothing is started when it raises.
- ``prompt`` / ``interrupt``: write the command to the session's stdin. InvalidInput
  naming ``text`` for an empty prompt, ``sessionID`` for a malformed id; NotFound for
  an unknown one; Conflict naming ``sessionID`` once it has ended.
- ``kill``: signals the runner's process group (default SIGKILL), as the exec kill.
Each create is an ``agent_session_started`` audit record (model, resume, the Claude
session id; never the prompt or the key).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import SandboxStatus, SessionInfo, SessionSpec
from corral.domain.agent_config import AgentConfig, check_prompt
from corral.errors import Conflict, InvalidInput
from corral.ids import check
from corral.services.bindings import BindingService
from corral.services.commands import CommandService
from corral.services.models import ModelService, sandbox_env
from corral.services.sandboxes import SandboxService

TEMPLATE = "agent"
PYTHON = "/usr/bin/python3"
RUNNER = "/usr/local/lib/corral/claude_runner.py"
PREFIX = "as"
STARTED = "agent_session_started"
CLI_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_BUG_COMMAND": "1",
    "CLAUDE_CODE_ENTRYPOINT": "sdk-py",
    "IS_SANDBOX": "1",  # the CLI runs tools without asking as root only when told it is sandboxed
}


@dataclass(frozen=True)
class AgentSession:
    id: str
    sandbox_id: str
    running: bool
    started_at: datetime
    claude_session_id: str
    exit_code: int | None = None


class AgentSessionService:
    def __init__(
        self,
        sandboxes: SandboxService,
        commands: CommandService,
        bindings: BindingService,
        models: ModelService,
    ) -> None:
        self.sandboxes = sandboxes
        self.commands = commands
        self.bindings = bindings
        self.models = models

    async def create(self, principal: Principal, sandbox_id: str, config: AgentConfig) -> AgentSession:
        require(principal, Scope.SANDBOX_EXEC)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if sandbox.template != TEMPLATE:
            raise InvalidInput(
                f"agent sessions run in sandboxes of the {TEMPLATE!r} template (templateID {TEMPLATE!r});"
                f" {sandbox_id} is of {sandbox.template!r}",
                field="sandboxID",
            )
        if not sandbox.live and sandbox.status is not SandboxStatus.HIBERNATED:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}, not running", field="sandboxID")
        model = self.models.binding(principal.org_id)  # ModelUnavailable before anything starts
        await self.sandboxes.processes_of(principal, sandbox_id)  # wakes a hibernated one
        urls = await self.bindings.grant(sandbox_id, [model])
        claude_session_id = config.resume or str(uuid.uuid4())
        spec = SessionSpec(
            cmd=PYTHON,
            args=(RUNNER, config.runner_json(claude_session_id)),
            envs={**CLI_ENV, **sandbox_env(urls[model.name])},
            cwd=config.cwd,
        )
        info = await self.commands.start_session(principal, sandbox_id, spec, prefix=PREFIX)
        await self.sandboxes.audit.record_for(
            principal,
            STARTED,
            sandbox_id,
            session=info.id,
            model=config.model,
            resume=config.resume,
            claude_session=claude_session_id,
        )
        return _session(sandbox_id, info)

    async def list(self, principal: Principal, sandbox_id: str) -> list[AgentSession]:
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        found = [s for s in await agent.list_sessions() if s.id.startswith(f"{PREFIX}-")]
        return [_session(sandbox_id, s) for s in sorted(found, key=lambda s: s.started_at)]

    async def prompt(self, principal: Principal, sandbox_id: str, session_id: str, text: object) -> None:
        check_prompt(text, "text")
        await self._send(principal, sandbox_id, session_id, {"type": "prompt", "text": text})

    async def interrupt(self, principal: Principal, sandbox_id: str, session_id: str) -> None:
        await self._send(principal, sandbox_id, session_id, {"type": "interrupt"})

    async def kill(self, principal: Principal, sandbox_id: str, session_id: str, sig: int = 9) -> None:
        check(session_id, PREFIX, "sessionID")
        await self.commands.kill_session(principal, sandbox_id, session_id, sig)

    async def _send(
        self, principal: Principal, sandbox_id: str, session_id: str, command: dict[str, object]
    ) -> None:
        require(principal, Scope.SANDBOX_EXEC)
        check(session_id, PREFIX, "sessionID")
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        info = await agent.session(session_id)
        if not info.running:
            raise Conflict(f"agent session {session_id} has ended", field="sessionID")
        async with await self.commands.attach(principal, sandbox_id, session_id) as attached:
            await attached.send_stdin(json.dumps(command).encode() + b"\n")


def _session(sandbox_id: str, info: SessionInfo) -> AgentSession:
    return AgentSession(
        id=info.id,
        sandbox_id=sandbox_id,
        running=info.running,
        started_at=info.started_at,
        claude_session_id=_claude_session_id(info.args),
        exit_code=info.exit_code,
    )


def _claude_session_id(args: tuple[str, ...]) -> str:
    """The Claude session named in the runner's arguments ("" when it cannot be read)."""
    try:
        value = json.loads(args[1]).get("sessionID") if len(args) > 1 else None
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
