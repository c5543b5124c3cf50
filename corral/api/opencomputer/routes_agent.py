"""Agent session routes (spec 003, "Agent Sessions"): create, list, follow-up prompt,
interrupt, kill, on both mounts. The session's events stream over the exec-session
WebSocket (``routes_exec``: ``/sandboxes/{id}/exec/{as-…}``), which both SDKs attach
to after the create. The service (services/agent_sessions.py) says what each refuses.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import AgentBody, AgentPromptBody, AgentSessionOut, KillBody
from corral.auth.principal import Principal
from corral.domain.agent_config import agent_config
from corral.services.agent_sessions import AgentSession

IDS = ("as",)
NOUN = "agent session"


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}/agent")
    caller = Depends(surface.principal)

    @r.post("", status_code=201, summary="Start an agent session (Claude Agent SDK) in the sandbox")
    async def create_agent(
        core: CoreDep, sandbox_id: str, body: AgentBody | None = None, principal: Principal = caller
    ) -> AgentSessionOut:
        body = body or AgentBody()
        config = agent_config(
            prompt=body.prompt,
            model=body.model,
            system_prompt=body.systemPrompt,
            allowed_tools=body.allowedTools,
            permission_mode=body.permissionMode,
            max_turns=body.maxTurns,
            cwd=body.cwd,
            mcp_servers=body.mcpServers,
            resume=body.resume,
        )
        return _out(await core.agents.create(principal, sandbox_id, config))

    @r.get("", summary="List the sandbox's agent sessions")
    async def list_agents(
        core: CoreDep, sandbox_id: str, principal: Principal = caller
    ) -> list[AgentSessionOut]:
        return [_out(s) for s in await core.agents.list(principal, sandbox_id)]

    @r.post("/{session_id}/prompt", summary="Send a follow-up prompt")
    async def prompt_agent(
        core: CoreDep, sandbox_id: str, session_id: str, body: AgentPromptBody, principal: Principal = caller
    ) -> dict[str, object]:
        session_id = mapping.path_id(session_id, IDS, NOUN)
        await core.agents.prompt(principal, sandbox_id, session_id, body.text)
        return {}

    @r.post("/{session_id}/interrupt", summary="Stop the agent's current turn")
    async def interrupt_agent(
        core: CoreDep, sandbox_id: str, session_id: str, principal: Principal = caller
    ) -> dict[str, object]:
        await core.agents.interrupt(principal, sandbox_id, mapping.path_id(session_id, IDS, NOUN))
        return {}

    @r.post("/{session_id}/kill", summary="End the agent session")
    async def kill_agent(
        core: CoreDep,
        sandbox_id: str,
        session_id: str,
        body: KillBody | None = None,
        principal: Principal = caller,
    ) -> dict[str, object]:
        signal = 9 if body is None or body.signal is None else body.signal
        await core.agents.kill(principal, sandbox_id, mapping.path_id(session_id, IDS, NOUN), signal)
        return {}

    return r


def _out(session: AgentSession) -> AgentSessionOut:
    return AgentSessionOut(
        sessionID=session.id,
        sandboxID=session.sandbox_id,
        running=session.running,
        startedAt=mapping.rfc3339(session.started_at),
        claudeSessionID=session.claude_session_id,
    )
