"""What an OpenComputer agent session is asked to be (spec 003, "Agent Sessions").

``agent_config(...)`` validates a create's fields and ``configured(...)`` a later
``configure``'s, raising InvalidInput naming the field (the OpenComputer name):

- ``prompt``: absent, or a non-empty string (not only blanks) of at most 256 KiB;
- ``model``: a Claude model the Claude Code CLI takes: a full name (``claude-…``) or an
  alias (``sonnet``, ``opus``, ``haiku``, ``opusplan``, ``default``), optionally with
  ``[1m]``;
- ``systemPrompt``: at most 64 KiB; ``cwd``: an absolute path;
- ``allowedTools``: at most 128 tool names or rules (``Bash(git:*)``), each 1-256
  printable characters;
- ``permissionMode``: one of the SDK's ``PERMISSION_MODES`` (default
  ``bypassPermissions``: nobody is there to approve a tool);
- ``maxTurns``: 1 to ``MAX_TURNS``;
- ``mcpServers``: an object of at most 16 servers, each named 1-64 letters, digits, ``_``
  or ``-``, each an object (a stdio ``command`` with ``args``/``env``, or a ``type`` with
  a ``url``), at most 64 KiB of JSON in all;
- ``resume``: a Claude session id (a UUID) to continue.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from corral.errors import InvalidInput

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk", "auto")
MAX_TURNS = 1000
MAX_PROMPT = 256 * 1024
MAX_SYSTEM_PROMPT = 64 * 1024
MAX_TOOLS = 128
MAX_MCP_SERVERS = 16
MAX_MCP_JSON = 64 * 1024
MODEL = re.compile(r"^(claude-[a-z0-9][a-z0-9.@-]{0,100}|sonnet|opus|haiku|opusplan|default)(\[1m\])?$")
TOOL = re.compile(r"^[\x20-\x7e]{1,256}$")
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class AgentConfig:
    prompt: str | None = None
    model: str | None = None
    system_prompt: str | None = None
    allowed_tools: tuple[str, ...] = ()
    permission_mode: str | None = None
    max_turns: int | None = None
    cwd: str | None = None
    mcp_servers: Mapping[str, object] = field(default_factory=dict)
    resume: str | None = None

    def runner_json(self, claude_session_id: str) -> str:
        """The runner's argument (agent/claude_runner.py), naming the Claude session."""
        document: dict[str, object] = {
            "prompt": self.prompt,
            "model": self.model,
            "systemPrompt": self.system_prompt,
            "allowedTools": list(self.allowed_tools),
            "permissionMode": self.permission_mode,
            "maxTurns": self.max_turns,
            "cwd": self.cwd,
            "mcpServers": dict(self.mcp_servers),
            "resume": self.resume,
            "sessionID": claude_session_id,
        }
        return json.dumps({k: v for k, v in document.items() if v not in (None, [], {})})


def agent_config(
    *,
    prompt: object = None,
    model: object = None,
    system_prompt: object = None,
    allowed_tools: object = None,
    permission_mode: object = None,
    max_turns: object = None,
    cwd: object = None,
    mcp_servers: object = None,
    resume: object = None,
) -> AgentConfig:
    """A valid ``AgentConfig`` (see the module docstring)."""
    if prompt is not None:
        check_prompt(prompt, "prompt")
    if resume is not None:
        if not isinstance(resume, str):
            raise InvalidInput("resume must be a Claude session id", field="resume")
        try:
            resume = str(uuid.UUID(resume))
        except ValueError:
            raise InvalidInput("resume must be a Claude session id (a UUID)", field="resume") from None
    return replace(
        configured(
            AgentConfig(),
            model=model,
            system_prompt=system_prompt,
            allowed_tools=allowed_tools,
            permission_mode=permission_mode,
            max_turns=max_turns,
            cwd=cwd,
        ),
        prompt=prompt if isinstance(prompt, str) else None,
        mcp_servers=_mcp_servers(mcp_servers),
        resume=resume if isinstance(resume, str) else None,
    )


def configured(
    config: AgentConfig,
    *,
    model: object = None,
    system_prompt: object = None,
    allowed_tools: object = None,
    permission_mode: object = None,
    max_turns: object = None,
    cwd: object = None,
) -> AgentConfig:
    """``config`` with the given (not None) fields changed, each checked."""
    if model is not None and (not isinstance(model, str) or not MODEL.match(model)):
        raise InvalidInput(
            "model must be a Claude model name (claude-…) or an alias (sonnet, opus, haiku)", field="model"
        )
    if system_prompt is not None and (
        not isinstance(system_prompt, str) or len(system_prompt) > MAX_SYSTEM_PROMPT
    ):
        raise InvalidInput(
            f"systemPrompt must be a string of at most {MAX_SYSTEM_PROMPT} characters", field="systemPrompt"
        )
    if allowed_tools is not None and (
        not isinstance(allowed_tools, list)
        or len(allowed_tools) > MAX_TOOLS
        or not all(isinstance(t, str) and TOOL.match(t) for t in allowed_tools)
    ):
        raise InvalidInput(f"allowedTools must be at most {MAX_TOOLS} tool names", field="allowedTools")
    if permission_mode is not None and permission_mode not in PERMISSION_MODES:
        raise InvalidInput(
            f"permissionMode must be one of {', '.join(PERMISSION_MODES)}", field="permissionMode"
        )
    if max_turns is not None and (
        not isinstance(max_turns, int) or isinstance(max_turns, bool) or not 1 <= max_turns <= MAX_TURNS
    ):
        raise InvalidInput(f"maxTurns must be between 1 and {MAX_TURNS}", field="maxTurns")
    if cwd is not None and (
        not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd or len(cwd) > 4096
    ):
        raise InvalidInput("cwd must be an absolute path", field="cwd")
    return replace(
        config,
        model=model if isinstance(model, str) else config.model,
        system_prompt=system_prompt if isinstance(system_prompt, str) else config.system_prompt,
        allowed_tools=tuple(allowed_tools) if isinstance(allowed_tools, list) else config.allowed_tools,
        permission_mode=permission_mode if isinstance(permission_mode, str) else config.permission_mode,
        max_turns=max_turns if isinstance(max_turns, int) else config.max_turns,
        cwd=cwd if isinstance(cwd, str) else config.cwd,
    )


def check_prompt(text: object, name: str) -> str:
    """``text`` if it is a prompt: a string, not blank, at most ``MAX_PROMPT`` bytes."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"{name} must be a non-empty string", field=name)
    if len(text.encode()) > MAX_PROMPT:
        raise InvalidInput(f"{name} must be at most {MAX_PROMPT} bytes", field=name)
    return text


def _mcp_servers(value: object) -> Mapping[str, object]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_MCP_SERVERS:
        raise InvalidInput(
            f"mcpServers must be an object of at most {MAX_MCP_SERVERS} servers", field="mcpServers"
        )
    for name, server in value.items():
        if not SERVER_NAME.match(name) or not isinstance(server, dict):
            raise InvalidInput(
                "mcpServers: each server is named (letters, digits, _ or -) and an object", field="mcpServers"
            )
        if not isinstance(server.get("command"), str) and not isinstance(server.get("url"), str):
            raise InvalidInput(f"mcpServers.{name} needs a command or a url", field="mcpServers")
    if len(json.dumps(value)) > MAX_MCP_JSON:
        raise InvalidInput(f"mcpServers: at most {MAX_MCP_JSON} bytes of JSON", field="mcpServers")
    return value
