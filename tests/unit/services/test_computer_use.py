"""The computer-use loop (services/computer_use.py) over a scripted model and a desktop
whose execs are recorded (services/computer.py's xdotool and screenshot commands): what
reaches the model, what runs in the desktop, and where a run is cut."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from corral.domain import ExecRequest, ExecResult
from corral.services.computer import Computer
from corral.services.computer_use import KEEP_SCREENSHOTS, TOOL_TYPE, ComputerUseAgent, RunFailed

PNG = b"\x89PNG\r\n\x1a\n" + b"fake"


@dataclass
class Desktop:
    """A ``Processes`` that records the argv of every exec and answers a screenshot."""

    ran: list[tuple[str, ...]] = field(default_factory=list)
    fail: bool = False

    async def exec(self, request: ExecRequest) -> ExecResult:
        assert request.user == "sandbox" and request.envs["DISPLAY"] == ":99"
        self.ran.append((request.cmd, *request.args))
        if self.fail and request.cmd == "xdotool":
            return ExecResult(1, b"", b"Can't open display")
        return ExecResult(0, PNG if request.cmd == "python3" else b"", b"")


@dataclass
class Model:
    answers: list[dict[str, Any]]
    bodies: list[dict[str, object]] = field(default_factory=list)
    configured: bool = True

    async def messages(
        self, org_id: str, body: dict[str, object], *, sandbox_id: str | None = None
    ) -> dict[str, object]:
        assert (org_id, sandbox_id) == ("org-1", "sb-1")
        self.bodies.append(body)
        return self.answers.pop(0) if self.answers else use({"action": "screenshot"})


@dataclass
class Journal:
    said_: list[str] = field(default_factory=list)
    actions: list[tuple[dict[str, object], str | None]] = field(default_factory=list)

    async def said(self, text: str) -> None:
        self.said_.append(text)

    async def acting(self, tool_input: Mapping[str, object]) -> str:
        self.actions.append((dict(tool_input), "running"))
        return str(len(self.actions) - 1)

    async def acted(self, message_id: str, *, error: str | None) -> None:
        action, _ = self.actions[int(message_id)]
        self.actions[int(message_id)] = (action, error or "done")


def use(tool_input: dict[str, Any], *, name: str = "computer", n: int = 0) -> dict[str, Any]:
    block = {"type": "tool_use", "id": f"toolu_{n}", "name": name, "input": tool_input}
    return {"content": [block], "stop_reason": "tool_use"}


def say(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "stop_reason": "end_turn"}


async def drive(model: Model, desktop: Desktop, journal: Journal, max_steps: int = 10) -> int:
    agent = ComputerUseAgent(model, model_name="claude-test", max_steps=max_steps)
    conversation = [{"role": "user", "content": "type hello"}]
    return await agent.drive("org-1", "sb-1", Computer(desktop), "system", conversation, journal)


async def test_actions_run_in_the_desktop_and_their_results_reach_the_model() -> None:
    model = Model(
        [use({"action": "screenshot"}), use({"action": "type", "text": "echo hi; rm -rf /"}), say("done")]
    )
    desktop, journal = Desktop(), Journal()
    assert await drive(model, desktop, journal) == 3
    tool = model.bodies[0]["tools"][0]  # type: ignore[index]
    assert tool["type"] == TOOL_TYPE and (tool["display_width_px"], tool["display_height_px"]) == (1280, 720)
    assert ("xdotool", "type", "--delay", "8", "--", "echo hi; rm -rf /") in desktop.ran  # an argv: no shell
    result = model.bodies[1]["messages"][-1]["content"][0]  # type: ignore[index]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_0"
    assert result["content"][0]["source"]["media_type"] == "image/png"
    assert [status for _, status in journal.actions] == ["done", "done"] and journal.said_ == ["done"]


@pytest.mark.parametrize(
    ("tool_input", "reason"),
    [
        ({"action": "left_click", "coordinate": [1280, 10]}, "off the 1280x720 screen"),
        ({"action": "mouse_move", "coordinate": [-1, 10]}, "off the 1280x720 screen"),
        ({"action": "left_click", "coordinate": "10,10"}, "two integers"),
        ({"action": "fly"}, "unknown action"),
        ({"action": "type"}, "text must be"),
        ({"action": "scroll", "coordinate": [1, 1], "scroll_direction": "in"}, "scroll_direction"),
        ({"action": "wait", "duration": 3600}, "duration"),
    ],
)
async def test_a_refused_action_is_an_error_result_and_the_run_goes_on(
    tool_input: dict[str, Any], reason: str
) -> None:
    model = Model([use(tool_input), say("ok")])
    desktop, journal = Desktop(), Journal()
    await drive(model, desktop, journal)
    assert not any(argv[0] == "xdotool" for argv in desktop.ran)  # nothing was done
    result = model.bodies[1]["messages"][-1]["content"][0]  # type: ignore[index]
    assert result["is_error"] is True and reason in result["content"]
    assert reason in str(journal.actions[0][1])


async def test_an_action_that_fails_in_the_desktop_is_reported_to_the_model() -> None:
    model = Model([use({"action": "key", "text": "ctrl+s"}), say("ok")])
    desktop, journal = Desktop(fail=True), Journal()
    await drive(model, desktop, journal)
    result = model.bodies[1]["messages"][-1]["content"][0]  # type: ignore[index]
    assert result["is_error"] is True and "Can't open display" in result["content"]


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ({"stop_reason": "end_turn"}, "no content list"),
        (
            {"content": [{"type": "tool_use", "name": "computer"}], "stop_reason": "tool_use"},
            "without its id",
        ),
        ({"content": [{"type": "video"}], "stop_reason": "end_turn"}, "unknown content block"),
        (use({"command": "ls"}, name="bash"), "a tool it was not given"),
        ({"content": [], "stop_reason": "tool_use"}, "stop_reason 'tool_use' with no tool use"),
        ({"content": [], "stop_reason": "refusal"}, "refused"),
    ],
)
async def test_a_malformed_answer_fails_the_run(answer: dict[str, Any], reason: str) -> None:
    with pytest.raises(RunFailed, match=reason):
        await drive(Model([answer]), Desktop(), Journal())


async def test_endless_tool_calls_are_cut_at_the_step_limit_with_few_screenshots_sent() -> None:
    model = Model([])
    with pytest.raises(RunFailed, match="step limit was reached: 6 model calls"):
        await drive(model, Desktop(), Journal(), max_steps=6)
    assert len(model.bodies) == 6
    last = model.bodies[-1]["messages"]
    images = json_count(last, '"type": "image"')
    assert (
        images == KEEP_SCREENSHOTS
        and json_count(last, "an older screenshot, left out") == 5 - KEEP_SCREENSHOTS
    )


def json_count(value: object, needle: str) -> int:
    return json.dumps(value).count(needle)


def test_xdotool_argv_of_each_action() -> None:
    argv = Computer.argv
    assert argv("left_click", {"coordinate": [5, 6]}) == ["mousemove", "5", "6", "click", "1"]
    assert argv("double_click", {}) == ["click", "--repeat", "2", "1"]
    assert argv("right_click", {"coordinate": [0, 719]})[-1] == "3"
    drag = argv("left_click_drag", {"start_coordinate": [1, 2], "coordinate": [3, 4]})
    assert drag == ["mousemove", "1", "2", "mousedown", "1", "mousemove", "3", "4", "mouseup", "1"]
    assert argv("key", {"text": "ctrl+s Return"}) == ["key", "--", "ctrl+s", "Return"]
    scroll = argv("scroll", {"coordinate": [9, 9], "scroll_direction": "down", "scroll_amount": 2})
    assert scroll == ["mousemove", "9", "9", "click", "--repeat", "2", "5"]
