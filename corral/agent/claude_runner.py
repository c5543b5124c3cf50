"""The agent-session runner: runs inside sandboxes of the ``agent`` template and drives
one Claude agent (the Claude Agent SDK, ``claude_agent_sdk``, over the Claude Code
CLI it ships) for an OpenComputer agent session (services/agent_sessions.py).

Not imported by corral. runtime/templates.py lays this file into the template at
``/usr/local/lib/corral/claude_runner.py``; the session service starts it as an exec
session (``as-…``) with one argument, the session's configuration as JSON::

    {"prompt"?, "model"?, "systemPrompt"?, "allowedTools"?, "permissionMode"?,
     "maxTurns"?, "cwd"?, "mcpServers"?, "resume"?, "sessionID"}

``sessionID`` is the Claude session's id, chosen by corral (a new session) or the one
to resume (``resume``). The model is reached through ``ANTHROPIC_BASE_URL`` with
``ANTHROPIC_API_KEY`` from the environment (corral's binding; the key is added
outside the sandbox).

Output: one JSON object a line on stdout, each with its ``type``::

    {"type": "ready", "claudeSessionID"}                        started, before any turn
    {"type": "system", "subtype", "claudeSessionID", "data"}    the CLI's system messages (init: tools, model)
    {"type": "assistant", "model", "content": [blocks]}         text, tool_use (id, name, input), thinking
    {"type": "tool_result", "tool_use_id", "content", "is_error"}   a tool's answer
    {"type": "result", "subtype", "is_error", "num_turns", "duration_ms",
     "total_cost_usd", "usage", "result", "claudeSessionID"}    a turn's end, with cost and usage
    {"type": "turn_complete", "claudeSessionID"}                the agent waits for a prompt
    {"type": "interrupted"}                                     an interrupt was sent to the turn
    {"type": "configured", ...what changed}                     a configure took effect
    {"type": "error", "message"}                                a command or the agent failed

Lines on stderr are errors (the CLI's own among them). Commands arrive as JSON lines on
stdin: ``{"type": "prompt", "text"}`` (run now, or after the turn under way),
``{"type": "interrupt"}``, ``{"type": "configure", model?, systemPrompt?,
allowedTools?, permissionMode?, maxTurns?, cwd?}`` (from the next turn on: the Claude
session goes on, resumed). The runner exits 0 when stdin ends or it has been idle
(no turn, no command) for ``CORRAL_AGENT_IDLE_S`` seconds (default 1800), 1 when the
agent cannot start.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import asdict, is_dataclass
from typing import Any

from claude_agent_sdk import (  # type: ignore[import-not-found, unused-ignore]
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)

CONFIGURABLE = ("model", "systemPrompt", "allowedTools", "permissionMode", "maxTurns", "cwd")


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event, default=str) + "\n")
    sys.stdout.flush()


def blocks(content: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, TextBlock):
            out.append({"type": "text", "text": block.text})
        elif isinstance(block, ToolUseBlock):
            out.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
        elif is_dataclass(block) and not isinstance(block, type):
            out.append({"type": type(block).__name__.removesuffix("Block").lower(), **asdict(block)})
    return out


class Runner:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.session_id: str = config["sessionID"]
        self.started = False  # a turn ran: later connections resume the session
        self.client: Any = None
        self.prompts: asyncio.Queue[str] = asyncio.Queue()
        self.turning = False
        self.reconnect = False
        self.idle = asyncio.Event()  # set while no turn runs and none waits
        self.last = time.monotonic()

    def options(self) -> Any:
        c = self.config
        resume = self.session_id if self.started or c.get("resume") else None
        return ClaudeAgentOptions(
            model=c.get("model"),
            system_prompt=c.get("systemPrompt"),
            allowed_tools=list(c.get("allowedTools") or []),
            permission_mode=c.get("permissionMode") or "bypassPermissions",
            max_turns=c.get("maxTurns"),
            cwd=c.get("cwd") or os.getcwd(),
            mcp_servers=c.get("mcpServers") or {},
            resume=resume,
            session_id=None if resume else self.session_id,
            stderr=lambda line: print(line, file=sys.stderr, flush=True),
            setting_sources=[],
        )

    async def connect(self) -> None:
        if self.client is not None:
            await self.client.disconnect()
        self.client = ClaudeSDKClient(self.options())
        await self.client.connect()

    async def run_turn(self, text: str) -> None:
        try:
            await self.client.query(text)
            self.started = True
            async for message in self.client.receive_response():
                self.forward(message)
        except Exception as exc:  # noqa: BLE001 (reported, the session goes on)
            emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        emit({"type": "turn_complete", "claudeSessionID": self.session_id})
        self.last = time.monotonic()

    def forward(self, message: Any) -> None:
        if isinstance(message, AssistantMessage):
            emit({"type": "assistant", "model": message.model, "content": blocks(message.content)})
        elif isinstance(message, UserMessage):
            for block in message.content if isinstance(message.content, list) else []:
                if isinstance(block, ToolResultBlock):
                    emit(
                        {
                            "type": "tool_result",
                            "tool_use_id": block.tool_use_id,
                            "content": block.content,
                            "is_error": bool(block.is_error),
                        }
                    )
        elif isinstance(message, SystemMessage):
            self.session_id = str(message.data.get("session_id") or self.session_id)
            emit(
                {
                    "type": "system",
                    "subtype": message.subtype,
                    "claudeSessionID": self.session_id,
                    "data": message.data,
                }
            )
        elif isinstance(message, ResultMessage):
            self.session_id = message.session_id or self.session_id
            emit(
                {
                    "type": "result",
                    "subtype": message.subtype,
                    "is_error": message.is_error,
                    "num_turns": message.num_turns,
                    "duration_ms": message.duration_ms,
                    "total_cost_usd": message.total_cost_usd,
                    "usage": message.usage,
                    "result": message.result,
                    "claudeSessionID": self.session_id,
                }
            )

    async def command(self, line: str) -> None:
        self.last = time.monotonic()
        try:
            command = json.loads(line)
            kind = command.get("type")
        except (ValueError, AttributeError):
            emit({"type": "error", "message": "a command is one JSON object a line"})
            return
        if kind == "prompt":
            text = command.get("text")
            if not isinstance(text, str) or not text.strip():
                emit({"type": "error", "message": "prompt: text must be a non-empty string"})
                return
            self.idle.clear()
            await self.prompts.put(text)
        elif kind == "interrupt":
            try:
                await self.client.interrupt()
            except Exception as exc:  # noqa: BLE001
                emit({"type": "error", "message": f"interrupt: {type(exc).__name__}: {exc}"})
                return
            emit({"type": "interrupted"})
        elif kind == "configure":
            changed = {k: command[k] for k in CONFIGURABLE if command.get(k) is not None}
            self.config.update(changed)
            self.reconnect = True  # before the next turn
            emit({"type": "configured", **changed})
        else:
            emit({"type": "error", "message": f"unknown command type {kind!r}"})


async def main() -> int:
    config = json.loads(sys.argv[1])
    runner = Runner(config)
    try:
        await runner.connect()
    except Exception as exc:  # noqa: BLE001
        emit({"type": "error", "message": f"the agent did not start: {type(exc).__name__}: {exc}"})
        return 1
    emit({"type": "ready", "claudeSessionID": runner.session_id})
    idle = float(os.environ.get("CORRAL_AGENT_IDLE_S") or 1800)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def worker() -> None:
        while True:
            text = await runner.prompts.get()
            if runner.reconnect:
                runner.reconnect = False
                await runner.connect()
            runner.turning = True
            runner.idle.clear()
            try:
                await runner.run_turn(text)
            finally:
                runner.turning = False
                if runner.prompts.empty():
                    runner.idle.set()

    work = asyncio.create_task(worker())
    runner.idle.set()
    if isinstance(config.get("prompt"), str) and config["prompt"].strip():
        runner.idle.clear()
        await runner.prompts.put(config["prompt"])
    try:
        while True:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=5)
            except TimeoutError:
                quiet = not runner.turning and runner.prompts.empty()
                if quiet and time.monotonic() - runner.last > idle:
                    return 0
                continue
            if not line:  # stdin ended: finish what was asked, then exit
                await runner.idle.wait()
                return 0
            if line.strip():
                await runner.command(line.decode(errors="replace"))
    finally:
        work.cancel()
        await runner.client.disconnect()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
