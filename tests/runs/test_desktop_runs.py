"""Runs of the computer-use agent on a real desktop (a ``gui`` sandbox on runc) through a
real ``corral serve``, the model a scripted fake of the Messages API: what reaches the
model (real PNG screenshots of the 1280x720 display), what the actions do on the desktop
(text typed into an xterm runs there and saves a file), the thread's messages, the
run's token and SSE stream, a second run on the same desktop (``restored``), extend
stacking, a cancel, a refused action and a malformed answer, and a crash in mid-run."""

from __future__ import annotations

import base64
import json
import struct
import threading
import time
import zlib
from typing import Any

import httpx

from tests.runs.conftest import Server
from tests.support.conditions import eventually
from tests.support.fake_anthropic import FakeMessagesApi, Text, ToolUse, Turn

XTERM = "xterm -name corralterm -geometry 100x30+0+0 -e bash --norc --noprofile"
# until the xterm's window is mapped (a search while fluxbox maps windows may meet one gone)
SHOWN = "for _ in $(seq 300); do xdotool search --onlyvisible --classname corralterm && exit; sleep 0.1; done; exit 1"
SAVE = "mkdir -p ~/Desktop && echo corral-$((6*7)) > ~/Desktop/today.txt"


def computer(**tool_input: Any) -> ToolUse:
    return ToolUse("computer", tool_input)


def run_of(server: Server, thread: str, run: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with server.client(**(headers or {})) as http:
        answer = http.get(f"/api/sessions/{thread}/runs/{run}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def ended(server: Server, thread: str, run: str, timeout: float = 60) -> dict[str, Any]:
    eventually(lambda: run_of(server, thread, run)["isCompleted"], timeout, f"run {run} did not end", 0.1)
    return run_of(server, thread, run)


def start(server: Server, thread: str, message: str, **headers: str) -> dict[str, Any]:
    with server.client(**headers) as http:
        answer = http.post(f"/api/sessions/{thread}/runs", json={"message": message})
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


def new_thread(server: Server, prompt: str) -> str:
    with server.client() as http:
        created = http.post("/api/sessions", json={"prompt": prompt})
    assert created.status_code == 201, created.text
    return str(created.json()["threadId"])


def in_desktop(server: Server, sandbox_id: str, script: str) -> str:
    """``script`` as the user sandbox on the desktop's display; its stdout."""
    body = {
        "cmd": "setpriv",
        "args": ["--reuid=1000", "--regid=1000", "--init-groups", "bash", "-c", script],
        "envs": {"DISPLAY": ":99", "HOME": "/home/sandbox"},
        "timeout": 30,
    }
    with server.opencomputer() as http:
        answer = http.post(f"/sandboxes/{sandbox_id}/exec/run", json=body)
    assert answer.status_code == 200 and answer.json()["exitCode"] == 0, answer.text
    return str(answer.json()["stdout"])


def screenshots(body: dict[str, Any]) -> list[bytes]:
    """The PNGs of the tool results in a request's last message."""
    found = []
    for block in body["messages"][-1]["content"]:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            for part in block.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "image":
                    found.append(base64.b64decode(part["source"]["data"]))
    return found


def decoded(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the raw scanlines of an 8-bit RGB PNG (checked chunk by chunk)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    at, idat, header = 8, b"", b""
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, data = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        assert struct.unpack(">I", png[at + 8 + length : at + 12 + length])[0] == zlib.crc32(kind + data)
        header = data if kind == b"IHDR" else header
        idat += data if kind == b"IDAT" else b""
        at += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    assert (depth, color) == (8, 2)
    return width, height, zlib.decompress(idat)


def test_a_run_looks_at_the_desktop_and_types_into_an_xterm(
    server_and_thread: tuple[Server, str], model: FakeMessagesApi
) -> None:
    server, thread = server_and_thread
    gate = threading.Event()  # the first model call answers once the xterm is up
    model.add(
        Turn([Text("Let me look."), computer(action="screenshot")], gate=gate),
        Turn([computer(action="left_click", coordinate=[400, 200])]),
        Turn([computer(action="type", text=SAVE)]),
        Turn([computer(action="key", text="Return")]),
        Turn([Text("Saved the date.")]),
    )
    already = len(model.received)
    started = start(server, thread, "save it", **{"X-Client-Id": "tenant-7"})
    run, token = started["runId"], started["publicAccessToken"]
    eventually(
        lambda: run_of(server, thread, run)["metadata"].get("sandboxStatus") == "ready", 60, "no desktop"
    )
    meta = run_of(server, thread, run)["metadata"]
    sandbox = meta["sandboxId"]
    assert meta["vncUrl"].startswith("http") and f"sbx-{sandbox}-6080." in meta["vncUrl"]
    assert run_of(server, thread, run)["status"] == "RUNNING"
    in_desktop(server, sandbox, f"{XTERM} >/dev/null 2>&1 & {SHOWN}")
    gate.set()

    done = ended(server, thread, run)
    assert (done["status"], done["isCompleted"], done["isErrored"], done["error"]) == (
        "COMPLETED",
        True,
        False,
        None,
    )
    assert (
        in_desktop(server, sandbox, "cat ~/Desktop/today.txt").strip() == "corral-42"
    )  # typed, and run by bash

    calls = [r for r in model.received[already:] if r.scripted]
    assert len(calls) == 5 and all(r.headers["x-api-key"] == model.key for r in calls)
    assert calls[0].body["tools"][0]["type"] == "computer_20250124"
    assert calls[0].headers["anthropic-beta"] == "computer-use-2025-01-24"
    assert calls[0].body["messages"][0] == {
        "role": "user",
        "content": "open a terminal and save the date\n\nsave it",
    }
    [first] = screenshots(calls[1].body)
    width, height, raw = decoded(first)
    assert (width, height) == (1280, 720) and len(raw) == 720 * (1 + 1280 * 3)
    assert len(set(raw[1 : 1 + 1280 * 3 : 3])) > 1  # not a blank image: the xterm and the desktop
    after = screenshots(calls[4].body)
    assert after and decoded(after[0])[2] != raw  # the screen changed

    with server.client() as http:
        messages = http.get(f"/api/sessions/{thread}").json()["thread"]["messages"]
    roles = [(m["role"], (m.get("action") or {}).get("action"), m.get("status")) for m in messages]
    assert roles == [
        ("user", None, None),
        ("user", None, None),
        ("assistant", None, None),
        ("action", "screenshot", "done"),
        ("action", "left_click", "done"),
        ("action", "type", "done"),
        ("action", "key", "done"),
        ("assistant", None, None),
    ]
    assert messages[-1]["content"] == "Saved the date." and all(m["runId"] == run for m in messages[1:])

    # the run's token reads the run and its stream, every frame from the first
    bare = httpx.Client(base_url=server.url, timeout=30)
    with bare:
        assert (
            bare.get(
                f"/api/sessions/{thread}/runs/{run}", headers={"Authorization": f"Bearer {token}"}
            ).json()["status"]
            == "COMPLETED"
        )
        stream = bare.get(f"/api/sessions/{thread}/runs/{run}/stream", params={"token": token})
    kinds = [line[7:] for line in stream.text.splitlines() if line.startswith("event: ")]
    statuses = [
        json.loads(line[6:]).get("sandboxStatus")
        for line in stream.text.splitlines()
        if line.startswith("data: ")
    ]
    assert (
        kinds[0] == "status"
        and kinds[-1] == "done"
        and kinds.count("action") == 8
        and kinds.count("assistant") == 2
    )
    assert [s for s in statuses if s] == ["initializing", "ready"]

    # X-Client-Id in the desktop's audit trail (written in batches: waited for)
    def recorded() -> list[dict[str, Any]]:
        with server.opencomputer() as http:
            trail = http.get(f"/sandboxes/{sandbox}/audit", params={"limit": 100}).json()
        return [e for e in trail["events"] if e["kind"] in ("agent_run_started", "agent_run_ended")]

    eventually(lambda: len(recorded()) == 2, 30, "the run's audit records never came")
    assert all(e["clientID"] == "tenant-7" and e["data"]["run"] == run for e in recorded())


def test_a_second_run_of_the_thread_reuses_its_desktop(
    server_and_thread: tuple[Server, str], model: FakeMessagesApi
) -> None:
    server, thread = server_and_thread
    with server.client() as http:
        before = http.get(f"/api/sessions/{thread}").json()["thread"]["metadata"]
    model.add(Turn([computer(action="screenshot")]), Turn([Text("Still there.")]))
    run = start(server, thread, "check it")["runId"]
    done = ended(server, thread, run)
    assert done["status"] == "COMPLETED"
    assert (
        done["metadata"]["sandboxStatus"] == "restored"
        and done["metadata"]["sandboxId"] == before["sandboxId"]
    )
    with server.client() as http:
        assert http.get(f"/api/sessions/{thread}").json()["thread"]["metadata"]["sandboxStatus"] == "restored"


def test_extend_stacks_fifteen_minutes(server_and_thread: tuple[Server, str]) -> None:
    server, thread = server_and_thread
    with server.client() as http:
        sandbox = http.get(f"/api/sessions/{thread}").json()["thread"]["metadata"]["sandboxId"]
        first = http.post("/api/sandbox/extend", json={"sandboxId": sandbox})
        second = http.post("/api/sandbox/extend", json={"sandboxId": sandbox})
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["success"], body["message"], body["sandboxId"]) == (
        True,
        "Sandbox lifecycle extended by 15 minutes",
        sandbox,
    )
    at = [
        time.mktime(time.strptime(a.json()["expiresAt"][:19], "%Y-%m-%dT%H:%M:%S")) for a in (first, second)
    ]
    assert 900 <= at[1] - at[0] <= 901  # stacked on the deadline, not on now
    assert at[0] - time.time() > 900 + 600  # the first 15 minutes, plus the next


def test_cancel_stops_a_run_and_the_desktop_stays(
    server_and_thread: tuple[Server, str], model: FakeMessagesApi
) -> None:
    server, thread = server_and_thread
    thinking = threading.Event()
    model.add(Turn([computer(action="screenshot")], gate=thinking))
    asked = len(model.scripted())
    run = start(server, thread, "wait")["runId"]
    model.wait_for(asked + 1, 60)  # the model is "thinking": the run is RUNNING
    assert run_of(server, thread, run)["status"] == "RUNNING"
    with server.client() as http:
        canceled = http.post(f"/api/sessions/{thread}/runs/{run}/cancel")
    thinking.set()
    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["isCompleted"], canceled.json()["isErrored"]) == (
        "CANCELED",
        True,
        False,
    )
    sandbox = canceled.json()["metadata"]["sandboxId"]
    assert in_desktop(server, sandbox, "xdotool getdisplaygeometry").split() == ["1280", "720"]


def test_an_off_screen_click_is_refused_and_a_malformed_answer_fails_the_run(
    server_and_thread: tuple[Server, str], model: FakeMessagesApi
) -> None:
    server, thread = server_and_thread
    model.add(
        Turn([computer(action="left_click", coordinate=[5000, 10])]),
        Turn([ToolUse("bash", {"command": "id"})]),
    )
    run = start(server, thread, "click")["runId"]
    done = ended(server, thread, run)
    assert done["status"] == "FAILED" and done["isErrored"] is True
    assert "a tool it was not given: 'bash'" in done["error"]
    with server.client() as http:
        messages = http.get(f"/api/sessions/{thread}").json()["thread"]["messages"]
    [click] = [m for m in messages if m["runId"] == run and m["role"] == "action"]
    assert click["status"] == "failed" and "off the 1280x720 screen" in click["detail"]
    assert in_desktop(server, done["metadata"]["sandboxId"], "xdotool getdisplaygeometry").split() == [
        "1280",
        "720",
    ]


def test_a_run_cut_by_a_crash_ends_failed_after_the_restart(
    server_and_thread: tuple[Server, str], model: FakeMessagesApi
) -> None:
    server, thread = server_and_thread
    thinking = threading.Event()
    model.add(Turn([computer(action="screenshot")], gate=thinking))
    run = start(server, thread, "hold on")["runId"]
    eventually(
        lambda: run_of(server, thread, run)["metadata"].get("sandboxStatus") == "restored", 30, "no desktop"
    )
    server.restart()
    thinking.set()
    done = run_of(server, thread, run)
    assert (done["status"], done["isErrored"]) == ("FAILED", True)
    assert done["error"] == "corral restarted while the run was running"
    model.add(Turn([Text("back")]))
    again = ended(server, thread, start(server, thread, "still there?")["runId"])
    assert (
        again["status"] == "COMPLETED" and again["metadata"]["sandboxStatus"] == "restored"
    )  # the desktop survived
