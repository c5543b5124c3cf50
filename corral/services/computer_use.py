"""The computer-use agent: a loop on Anthropic's computer-use tool that looks at a
desktop and drives its mouse and keyboard (services/computer.py) until the model ends
its turn. The model is called from this host (``Model``: ``core.models``, so no key
goes near the sandbox); only screenshots and actions cross into it.

Contracts:
- ``drive`` sends the Messages API request (``TOOL``: ``computer_20250124`` on a
  1280x720 display, the run's system prompt and conversation), performs every
  ``tool_use`` of the answer in order and sends their ``tool_result`` (a screenshot as a
  base64 PNG, or text; ``is_error`` with the reason for an action the computer refuses:
  an unknown action, a bad field, a coordinate off the screen; or one that failed in the
  desktop), and repeats until an answer asks for no tool: then it returns the number of
  model calls made.
- Every assistant text is ``Journal.said``; every action is ``Journal.acting`` (before,
  status ``running``) then ``Journal.acted`` (``done`` or ``failed`` with the reason).
- ``RunFailed`` (its message is the run's error) for an answer that is not the Messages
  API's shape (no content list, a block without its fields, a tool other than
  ``computer``), a refusal, or ``max_steps`` model calls without the end of the turn
  (an endless run of tool calls). Errors of the model call (ModelUnavailable, the
  upstream's) and of the sandbox (gone, not running) go up as they are. The caller
  bounds the time (the run's deadline) and cancels; the desktop is left as it is.
- Only the last ``KEEP_SCREENSHOTS`` screenshots stay in the conversation sent (older
  ones become a text saying so), so a long run's requests stay bounded.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from corral.errors import CorralError, RuntimeFailure
from corral.services.computer import HEIGHT, WIDTH, BadAction, Computer

TOOL_TYPE = "computer_20250124"
TOOL = {
    "type": TOOL_TYPE,
    "name": "computer",
    "display_width_px": WIDTH,
    "display_height_px": HEIGHT,
    "display_number": 99,
}
KEEP_SCREENSHOTS = 3
MAX_TOKENS = 2048
ENDED = frozenset({"end_turn", "stop_sequence", "max_tokens", "pause_turn"})


class Model(Protocol):
    """Model access (``corral.services.models.ModelService``)."""

    @property
    def configured(self) -> bool: ...

    async def messages(
        self, org_id: str, body: dict[str, object], *, sandbox_id: str | None = None
    ) -> dict[str, object]: ...


class Journal(Protocol):
    """What a run records of the loop (services/runs.py)."""

    async def said(self, text: str) -> None: ...

    async def acting(self, tool_input: Mapping[str, object]) -> str:
        """An action message, ``running``; its id."""

    async def acted(self, message_id: str, *, error: str | None) -> None: ...


class RunFailed(Exception):
    """The run cannot go on; the message says why."""


@dataclass(frozen=True)
class ToolUse:
    id: str
    input: dict[str, Any]


class ComputerUseAgent:
    def __init__(self, model: Model, *, model_name: str, max_steps: int) -> None:
        self.model = model
        self.model_name = model_name
        self.max_steps = max_steps

    async def drive(
        self,
        org_id: str,
        sandbox_id: str,
        computer: Computer,
        system: str,
        conversation: list[dict[str, Any]],
        journal: Journal,
    ) -> int:
        messages = list(conversation)
        for step in range(1, self.max_steps + 1):
            body: dict[str, object] = {
                "model": self.model_name,
                "max_tokens": MAX_TOKENS,
                "system": system,
                "tools": [TOOL],
                "messages": _bounded(messages),
            }
            answer = await self.model.messages(org_id, body, sandbox_id=sandbox_id)
            content, uses = _parse(answer)
            messages.append({"role": "assistant", "content": content})
            for block in content:
                if block["type"] == "text" and block["text"].strip():
                    await journal.said(block["text"])
            if not uses:
                if answer.get("stop_reason") == "refusal":
                    raise RunFailed("the model refused to go on")
                return step
            messages.append({"role": "user", "content": [await _perform(u, computer, journal) for u in uses]})
        raise RunFailed(
            f"the step limit was reached: {self.max_steps} model calls without the end of the turn"
        )


async def _perform(use: ToolUse, computer: Computer, journal: Journal) -> dict[str, Any]:
    message_id = await journal.acting(use.input)
    try:
        outcome = await computer.act(use.input)
    except (BadAction, RuntimeFailure) as exc:
        reason = str(exc) if isinstance(exc, BadAction) else exc.message
        await journal.acted(message_id, error=reason)
        return {"type": "tool_result", "tool_use_id": use.id, "is_error": True, "content": reason}
    except Exception as exc:
        await journal.acted(
            message_id, error=exc.message if isinstance(exc, CorralError) else type(exc).__name__
        )
        raise
    await journal.acted(message_id, error=None)
    blocks: list[dict[str, Any]] = []
    if outcome.text is not None:
        blocks.append({"type": "text", "text": outcome.text})
    if outcome.png is not None:
        data = base64.b64encode(outcome.png).decode()
        blocks.append(
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}
        )
    return {"type": "tool_result", "tool_use_id": use.id, "content": blocks}


def _parse(answer: Mapping[str, object]) -> tuple[list[dict[str, Any]], list[ToolUse]]:
    """The answer's content blocks and tool uses; RunFailed if it is malformed."""
    content = answer.get("content")
    if not isinstance(content, list):
        raise RunFailed("the model's answer is malformed: it has no content list")
    kept: list[dict[str, Any]] = []
    uses: list[ToolUse] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            kept.append({"type": "text", "text": block["text"]})
        elif kind == "tool_use":
            use_id, name, tool_input = block.get("id"), block.get("name"), block.get("input")
            if not isinstance(use_id, str) or not use_id or not isinstance(tool_input, dict):
                raise RunFailed("the model's answer is malformed: a tool_use block without its id or input")
            if name != TOOL["name"]:
                raise RunFailed(f"the model asked for a tool it was not given: {str(name)[:64]!r}")
            kept.append({"type": "tool_use", "id": use_id, "name": name, "input": tool_input})
            uses.append(ToolUse(use_id, tool_input))
        elif kind in ("thinking", "redacted_thinking"):
            kept.append(dict(block))
        else:
            shown = json.dumps(block)[:120] if isinstance(block, dict) else type(block).__name__
            raise RunFailed(f"the model's answer is malformed: an unknown content block {shown}")
    stop = answer.get("stop_reason")
    if not uses and stop not in ENDED and stop != "refusal":
        raise RunFailed(f"the model's answer is malformed: stop_reason {str(stop)[:64]!r} with no tool use")
    return kept, uses


def _bounded(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with only the last KEEP_SCREENSHOTS images; older ones become text."""
    kept = 0
    out: list[dict[str, Any]] = []
    for message in reversed(messages):
        content = message["content"]
        if isinstance(content, list):
            blocks = []
            for block in reversed(content):
                count = _images(block)
                blocks.append(_thinned(block) if count and kept + count > KEEP_SCREENSHOTS else block)
                kept += count
            content = list(reversed(blocks))
        out.append({**message, "content": content})
    return list(reversed(out))


def _images(block: Mapping[str, Any]) -> int:
    if block.get("type") != "tool_result" or not isinstance(block.get("content"), list):
        return 0
    return sum(1 for part in block["content"] if part.get("type") == "image")


def _thinned(block: dict[str, Any]) -> dict[str, Any]:
    parts = [
        {"type": "text", "text": "(an older screenshot, left out)"} if part.get("type") == "image" else part
        for part in block["content"]
    ]
    return {**block, "content": parts}
