"""Agent sessions driven through the Python SDK (``opencomputer-sdk``:
``sandbox.agent.start`` / ``attach`` / ``list``, commands on the session's stdin),
the Claude Code CLI in the sandbox, and the fake model scripted to have the agent write
a file with the CLI's Write tool and then answer text."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from opencomputer import Sandbox
from opencomputer.agent import AgentEvent, AgentSession

from tests.agents.conftest import KEY, Server
from tests.support.fake_anthropic import Text, ToolUse, Turn

pytestmark = pytest.mark.integration
WAIT_S = 60


class Events:
    """What one attachment saw, and a way to wait for what is to come."""

    def __init__(self) -> None:
        self.seen: list[AgentEvent] = []
        self.errors: list[str] = []
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[int] | None = None

    def on_event(self, event: AgentEvent) -> None:
        self.seen.append(event)
        self._changed.set()

    def on_error(self, text: str) -> None:
        self.errors.append(text)

    def follow(self, session: AgentSession) -> AgentSession:
        self._pump = asyncio.create_task(session.wait())
        self._pump.add_done_callback(lambda _: self._changed.set())
        return session

    def of(self, kind: str) -> list[AgentEvent]:
        return [e for e in self.seen if e.type == kind]

    async def until(self, holds: Callable[[Events], bool], what: str) -> None:
        async with asyncio.timeout(WAIT_S):
            while not holds(self):
                if self._pump is not None and self._pump.done():
                    raise AssertionError(f"the session ended before {what}: {self.seen} {self.errors}")
                self._changed.clear()
                await self._changed.wait()

    async def exit_code(self) -> int:
        assert self._pump is not None
        async with asyncio.timeout(WAIT_S):
            return await self._pump


def texts(events: list[AgentEvent]) -> list[str]:
    return [b["text"] for e in events for b in e.get("content", []) if b.get("type") == "text"]


def tool_uses(events: list[AgentEvent]) -> list[dict[str, Any]]:
    return [b for e in events for b in e.get("content", []) if b.get("type") == "tool_use"]


def turns(count: int) -> Callable[[Events], bool]:
    return lambda events: len(events.of("turn_complete")) >= count


async def test_an_agent_writes_a_file_answers_and_takes_a_follow_up(agents: Server, sandbox: Sandbox) -> None:
    path = f"/tmp/agent-{uuid.uuid4().hex[:8]}.txt"
    fake = agents.script(
        Turn(
            [
                Text("I will write the file."),
                ToolUse("Write", {"file_path": path, "content": "hello from claude\n"}),
            ]
        ),
        Turn([Text("The file is written.")]),
        Turn([Text("A follow-up answer.")]),
    )
    events = Events()
    session = events.follow(
        await sandbox.agent.start(
            prompt="Write hello into a file",
            model="claude-sonnet-4-5",
            on_event=events.on_event,
            on_error=events.on_error,
        )
    )
    assert session.session_id.startswith("as-")
    await events.until(turns(1), "the first turn ended")
    assert await sandbox.files.read(path) == "hello from claude\n"
    assert texts(events.of("assistant")) == ["I will write the file.", "The file is written."]
    [use] = tool_uses(events.of("assistant"))
    assert (use["name"], use["input"]["file_path"]) == ("Write", path)
    [result] = events.of("tool_result")
    assert result["tool_use_id"] == use["id"] and not result["is_error"]
    [done] = events.of("result")
    assert done["subtype"] == "success" and done["num_turns"] == 2 and done["usage"]["output_tokens"] > 0
    claude_session = events.of("ready")[0]["claudeSessionID"]
    assert uuid.UUID(claude_session) and done["claudeSessionID"] == claude_session

    # the model saw the tools of the CLI and the prompt, and the key was added outside
    first = fake.scripted()[0]
    assert first.body["model"] == "claude-sonnet-4-5" and first.body["stream"] is True
    assert "Write hello into a file" in str(first.body["messages"])
    assert {r.headers["x-api-key"] for r in fake.received} == {KEY}

    # a late attach replays what happened (scrollback), then goes on live
    late = Events()
    late.follow(
        await sandbox.agent.attach(session.session_id, on_event=late.on_event, on_error=late.on_error)
    )
    await late.until(turns(1), "the scrollback's end of turn")
    assert [e.type for e in late.seen] == [e.type for e in events.seen]

    session.send_prompt("And now?")
    await events.until(turns(2), "the follow-up's turn ended")
    await late.until(turns(2), "the follow-up, live, on the late attachment")
    assert texts(events.of("assistant"))[-1] == "A follow-up answer."
    assert "And now?" in str(fake.scripted()[-1].body["messages"])

    [listed] = await sandbox.agent.list()
    assert (listed.session_id, listed.running) == (session.session_id, True)
    await session.kill()
    assert await events.exit_code() != 0
    assert not (await sandbox.agent.list())[0].running
    await session.close()


async def test_interrupt_stops_the_turn_under_way_and_configure_the_next(
    agents: Server, sandbox: Sandbox
) -> None:
    import threading

    gate = threading.Event()
    fake = agents.script(Turn([Text("a long answer that never comes")], gate=gate), Turn([Text("after")]))
    events = Events()
    session = events.follow(await sandbox.agent.start(on_event=events.on_event, on_error=events.on_error))
    await events.until(lambda e: bool(e.of("ready")), "ready")
    session.send_prompt("Think for a long time")
    await asyncio.to_thread(fake.wait_for, 1)  # the model is "thinking"
    session.interrupt()
    await events.until(
        lambda e: bool(e.of("interrupted")) and bool(e.of("turn_complete")), "the interrupted turn"
    )
    gate.set()
    session.configure(model="claude-haiku-4-5", max_turns=2)  # from the next turn on
    await events.until(lambda e: bool(e.of("configured")), "the configure's answer")
    assert events.of("configured")[0].data == {"model": "claude-haiku-4-5", "maxTurns": 2}
    session.send_prompt("Then answer shortly")
    await events.until(turns(2), "the next turn")
    assert texts(events.of("assistant"))[-1] == "after"
    assert fake.scripted()[-1].body["model"] == "claude-haiku-4-5"  # the session resumed, configured
    await session.kill()
    await session.close()


async def test_resume_continues_the_claude_session(agents: Server, sandbox: Sandbox) -> None:
    fake = agents.script(
        Turn([Text("Remembered: the word is tangerine.")]), Turn([Text("It was tangerine.")])
    )
    events = Events()
    first = events.follow(
        await sandbox.agent.start(
            prompt="Remember the word tangerine", on_event=events.on_event, on_error=events.on_error
        )
    )
    await events.until(turns(1), "the first session's turn")
    claude_session = events.of("result")[0]["claudeSessionID"]
    await first.kill()
    await first.close()

    async with agents.http() as http:
        created = await http.post(
            f"/sandboxes/{sandbox.sandbox_id}/agent", json={"prompt": "Which word?", "resume": claude_session}
        )
        assert created.status_code == 201, created.text
        assert created.json()["claudeSessionID"] == claude_session
    resumed = Events()
    second = resumed.follow(
        await sandbox.agent.attach(
            created.json()["sessionID"], on_event=resumed.on_event, on_error=resumed.on_error
        )
    )
    await resumed.until(turns(1), "the resumed session's turn")
    assert texts(resumed.of("assistant")) == ["It was tangerine."]
    history = str(fake.scripted()[-1].body["messages"])
    assert "Remember the word tangerine" in history and "Which word?" in history
    await second.kill()
    await second.close()
