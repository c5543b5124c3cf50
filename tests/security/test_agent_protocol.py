"""The agent protocol: sandbox code lies to the host, or goes for the agent.

The host treats the agent as untrusted (``corral/agent/client.py``: every frame size-
checked, every answer type-checked, every wait bounded). Here that claim is tested with
a real impostor: the sandbox puts its own ``python3`` first on the PATH, is hibernated
and woken, and from then on PID 1 is the attacker's fake agent, which answers the ping
properly and every other request with a lie (a 4 GiB frame, an endless file, answers
of the wrong shape, bytes that are not JSON, a session id that is a path). Each API
call must end in bounded time with an error (or a clipped answer), the server's memory
must stay bounded, the other org must not notice, and the impostor's sandbox must still
be killed cleanly.

And from inside, with the real agent: signals to PID 1, ``kill -9 -1``, bytes that
are not UTF-8 in output and file names, symlink loops, children that keep stdout open,
commands that ignore SIGTERM, a flood of sessions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.conftest import SecurityServer, Tenant
from tests.support.conditions import eventually
from tests.support.procfs import status_field

_FAKE_AGENT = r"""
import json, socket, struct, time
server = socket.socket(fileno=3)

def frame(kind, payload):
    return struct.pack(">BI", kind, len(payload)) + payload

def read_frame(conn):
    head = b""
    while len(head) < 5:
        chunk = conn.recv(5 - len(head))
        if not chunk:
            return None
        head += chunk
    kind, size = struct.unpack(">BI", head)
    data = b""
    while len(data) < size:
        chunk = conn.recv(min(65536, size - len(data)))
        if not chunk:
            break
        data += chunk
    return kind, data

LIES = {
    "exec": struct.pack(">BI", 0x01, 0xFFFFFFFF) + b"x" * 65536,
    "file.list": frame(0x10, b"[1, 2, 3]"),
    "session.list": frame(0x10, b'{"ok": true, "sessions": "not a list"}'),
    "ports": frame(0x10, b'{"ok": true, "ports": \xff\xfe}'),
    "session.start": frame(0x10, json.dumps({"ok": True, "id": "../../../etc/passwd", "pid": -1}).encode()),
    "file.stat": frame(0x10, json.dumps({"ok": True, "size": -5, "type": {"x": 1}}).encode()),
}

while True:
    conn, _ = server.accept()
    try:
        got = read_frame(conn)
        op = json.loads(got[1]).get("op") if got else None
        if op == "ping":
            conn.sendall(frame(0x10, json.dumps({"ok": True, "version": "1", "pid": 1}).encode()))
        elif op in ("env.set", "shutdown"):
            conn.sendall(frame(0x10, b'{"ok": true}'))
        elif op == "file.read":  # says 10 bytes, then sends DATA for ever
            conn.sendall(frame(0x10, b'{"ok": true, "size": 10, "length": 10}'))
            chunk, end = frame(0x05, b"A" * (1 << 20)), time.monotonic() + 20
            conn.settimeout(5)
            while time.monotonic() < end:
                conn.sendall(chunk)
        else:
            conn.sendall(LIES.get(op, frame(0x7F, b"\0" * 100)))
    except Exception:
        pass
    finally:
        conn.close()
"""

_WRAPPER = "#!/bin/sh\nexec /usr/bin/python3 -I -S /root/fake_agent.py\n"


def _server_rss_mb(server: SecurityServer) -> float:
    return int(status_field(server.pid, "VmRSS")[0]) / 1024


@pytest.fixture(scope="module")
def impostor(alpha: Tenant) -> Iterator[str]:
    """A sandbox whose PID 1 is the attacker's fake agent (after a hibernate and wake,
    the agent is started with the sandbox's own ``python3``, first on its PATH)."""
    sandbox = str(alpha.create(timeout=600)["sandboxID"])
    with alpha.http() as http:
        for path, body in (("/root/fake_agent.py", _FAKE_AGENT), ("/usr/local/bin/python3", _WRAPPER)):
            put = http.put(f"/sandboxes/{sandbox}/files", params={"path": path}, content=body.encode())
            assert put.status_code == 204, put.text
        assert alpha.run(sandbox, "chmod 755 /usr/local/bin/python3")["exitCode"] == 0
        hibernated = http.post(f"/sandboxes/{sandbox}/hibernate")
        assert hibernated.status_code == 200, hibernated.text
        woken = http.post(f"/sandboxes/{sandbox}/wake", json={})
        assert woken.status_code == 200, woken.text
    yield sandbox
    with alpha.http() as http:
        assert http.delete(f"/sandboxes/{sandbox}").status_code in (204, 404)


# (method, path, body, statuses that are an honest answer)
LIES: dict[str, tuple[str, str, Any, set[int]]] = {
    "frame_of_4_GiB": ("POST", "/exec/run", {"cmd": "id"}, {502}),
    "list_that_is_not_an_object": ("GET", "/files/list?path=/", None, {502}),
    "sessions_that_are_not_a_list": ("GET", "/exec", None, {502}),
    "answer_that_is_not_utf8_json": ("GET", "/ports", None, {502}),
    "session_id_that_is_a_path": ("POST", "/exec", {"cmd": "sleep", "args": ["1"]}, {502}),
    "unknown_frame_type": ("POST", "/pty", {}, {502}),
}


@pytest.mark.parametrize("lie", list(LIES.values()), ids=list(LIES))
def test_fake_agent_lies_are_errors_in_bounded_time(
    lie: tuple[str, str, Any, set[int]],
    alpha: Tenant,
    impostor: str,
    security_server: SecurityServer,
    unnoticed: Callable[[], None],
) -> None:
    method, path, body, honest = lie
    started = time.monotonic()
    with alpha.http() as http:
        answer = http.request(method, f"/sandboxes/{impostor}{path}", json=body, timeout=60)
    assert answer.status_code in honest, f"{answer.status_code} {answer.text[:300]}"
    assert "etc/passwd" not in answer.text
    assert time.monotonic() - started < 35  # the agent's op timeout, at most
    unnoticed()


def test_fake_agent_endless_file_is_cut_at_its_length(
    alpha: Tenant, impostor: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """The impostor says a file has 10 bytes and then sends 1 MiB frames for 20 s: the
    host sends at most 10 bytes (or fails the read), soon, without holding the flood."""
    rss_before = _server_rss_mb(security_server)
    started = time.monotonic()
    received, status = 0, 0
    with alpha.http() as http:
        try:
            with http.stream(
                "GET", f"/sandboxes/{impostor}/files", params={"path": "/x"}, timeout=30
            ) as answer:
                status = answer.status_code
                for chunk in answer.iter_bytes():
                    received += len(chunk)
                    if received > 10 << 20:
                        break
        except httpx.HTTPError:
            pass  # the server cut the body short: the read failed visibly
    assert status in (400, 502) or (status == 200 and received <= 10), (status, received)
    assert time.monotonic() - started < 35
    assert _server_rss_mb(security_server) - rss_before < 200
    unnoticed()


def test_fake_agent_sandbox_is_killed_cleanly(
    alpha: Tenant, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """Its own impostor (the module's stays for the other cases): hibernated, woken,
    lied to once, then killed: 204, and no container, mount or dir of it remains."""
    sandbox = str(alpha.create(timeout=300)["sandboxID"])
    with alpha.http() as http:
        for path, body in (("/root/fake_agent.py", _FAKE_AGENT), ("/usr/local/bin/python3", _WRAPPER)):
            http.put(f"/sandboxes/{sandbox}/files", params={"path": path}, content=body.encode())
        alpha.run(sandbox, "chmod 755 /usr/local/bin/python3")
        assert http.post(f"/sandboxes/{sandbox}/hibernate").status_code == 200
        assert http.post(f"/sandboxes/{sandbox}/wake", json={}).status_code == 200
        assert http.post(f"/sandboxes/{sandbox}/exec/run", json={"cmd": "id"}).status_code == 502
        assert http.delete(f"/sandboxes/{sandbox}").status_code == 204
        assert http.get(f"/sandboxes/{sandbox}").status_code in (404, 200)
    root = security_server.data_dir / "sandboxes" / sandbox
    eventually(
        lambda: not root.exists() and sandbox not in Path("/proc/self/mountinfo").read_text(),
        20,
        "the impostor's sandbox left traces",
        0.2,
    )
    unnoticed()


# ---- the real agent, attacked from inside ----------------------------------------------


@pytest.fixture(scope="module")
def box(alpha: Tenant) -> Iterator[str]:
    """A sandbox of alpha's for attacks that kill processes in it."""
    sandbox = str(alpha.create(timeout=600)["sandboxID"])
    yield sandbox
    alpha.kill(sandbox)


@pytest.mark.parametrize("signal", ["KILL", "STOP", "SEGV", "USR1", "QUIT"])
def test_signals_to_the_agent_from_inside_are_ignored(
    signal: str, alpha: Tenant, box: str, unnoticed: Callable[[], None]
) -> None:
    """PID 1 of a pid namespace gets only the signals it handles from inside it: the
    agent keeps answering (a stopped agent would hang the next call)."""
    alpha.run(box, f"kill -{signal} 1; echo sent")
    started = time.monotonic()
    assert alpha.run(box, "echo alive", timeout=10)["stdout"] == "alive\n"
    assert time.monotonic() - started < 10
    unnoticed()


@pytest.mark.parametrize("signal", ["TERM", "INT", "HUP"])
def test_a_sandbox_that_stops_its_own_agent_stops_cleanly(
    signal: str, alpha: Tenant, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """The agent ends on TERM, INT and HUP (that is how it is stopped), so sandbox code
    can stop its own sandbox, as ``shutdown`` would: it harms only itself. The host
    answers the next call with an error at once (no hang), and a kill leaves nothing."""
    sandbox = str(alpha.create(timeout=300)["sandboxID"])
    with alpha.http() as http:
        http.post(
            f"/sandboxes/{sandbox}/exec/run",
            json={"cmd": "sh", "args": ["-c", f"kill -{signal} 1"]},
            timeout=30,
        )
        deadline = time.monotonic() + 10  # the agent gives its children 2 s
        while True:
            started = time.monotonic()
            after = http.post(f"/sandboxes/{sandbox}/exec/run", json={"cmd": "true"}, timeout=30)
            assert time.monotonic() - started < 10  # an answer at once, never a hang
            if after.status_code != 200:
                break
            assert time.monotonic() < deadline, "the agent did not stop"
            time.sleep(0.2)
        assert after.status_code in (409, 502, 503), after.text
        assert http.delete(f"/sandboxes/{sandbox}").status_code in (204, 404)
    root = security_server.data_dir / "sandboxes" / sandbox
    eventually(lambda: not root.exists(), 20, "the stopped sandbox left its dir", 0.2)
    unnoticed()


def test_killing_every_process_leaves_the_agent(
    alpha: Tenant, box: str, unnoticed: Callable[[], None]
) -> None:
    with alpha.http() as http:
        session = http.post(f"/sandboxes/{box}/exec", json={"cmd": "sleep", "args": ["600"]})
        assert session.status_code == 201, session.text
    alpha.run(box, "kill -9 -1; echo done")  # every process it may signal but itself and PID 1
    assert alpha.run(box, "echo alive")["stdout"] == "alive\n"
    with alpha.http() as http:
        sessions = {s["sessionID"]: s for s in http.get(f"/sandboxes/{box}/exec").json()}
    assert sessions[session.json()["sessionID"]]["running"] is False
    unnoticed()


def test_output_that_is_not_utf8_is_valid_json(alpha: Tenant, box: str) -> None:
    result = alpha.run(box, r"printf 'a\377\376b\000c\033[2J\r\n'; printf '\300\200' >&2")
    assert result["exitCode"] == 0 and result["stdout"].startswith("a") and "c" in result["stdout"], result


ODD_NAMES = {
    "newline": "new\\nline",
    "not_utf8": "bad\\377",
    "escape_sequence": "esc\\033[31m",
    "255_bytes": "%0255d",
    "option_like": "-rf",
}


@pytest.mark.parametrize("name", list(ODD_NAMES.values()), ids=list(ODD_NAMES))
def test_odd_file_names_are_listed_cleanly(name: str, alpha: Tenant, box: str) -> None:
    """A name the sandbox chooses (any bytes but / and NUL) is listed: 200, valid JSON."""
    made = alpha.run(
        box, f"rm -rf /root/odd && mkdir -p /root/odd && touch -- \"/root/odd/$(printf -- '{name}' 0)\""
    )
    assert made["exitCode"] == 0, made
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{box}/files/list", params={"path": "/root/odd"})
    assert answer.status_code == 200, answer.text
    entries = answer.json()
    entries = entries.get("entries", entries) if isinstance(entries, dict) else entries
    assert len(entries) == 1, entries


def test_symlink_loop_is_an_error_not_a_hang(alpha: Tenant, box: str) -> None:
    alpha.run(box, "cd /root && ln -sfn loop-b loop-a && ln -sfn loop-a loop-b")
    started = time.monotonic()
    with alpha.http() as http:
        answers = [
            http.get(f"/sandboxes/{box}/files", params={"path": "/root/loop-a"}),
            http.get(f"/sandboxes/{box}/files/list", params={"path": "/root/loop-a"}),
            http.put(f"/sandboxes/{box}/files", params={"path": "/root/loop-a/x"}, content=b"x"),
        ]
    assert all(400 <= a.status_code < 500 for a in answers), [(a.status_code, a.text) for a in answers]
    assert time.monotonic() - started < 10


def test_child_keeping_stdout_open_does_not_hold_the_answer(alpha: Tenant, box: str) -> None:
    started = time.monotonic()
    result = alpha.run(box, "sleep 300 & echo started")
    assert result["stdout"] == "started\n"
    assert time.monotonic() - started < 10
    alpha.run(box, "pkill -x sleep; true")


def test_command_ignoring_sigterm_is_killed_at_its_timeout(alpha: Tenant, box: str) -> None:
    started = time.monotonic()
    result = alpha.run(box, "trap '' TERM INT HUP; while :; do sleep 0.1; done", timeout=2)
    assert time.monotonic() - started < 15
    assert result["exitCode"] != 0, result
    leftover = alpha.run(box, "ps -eo args | grep -c '[w]hile :'")["stdout"].strip()
    assert leftover == "0", leftover


def test_session_flood_is_bounded(
    alpha: Tenant, box: str, security_server: SecurityServer, unnoticed: Callable[[], None]
) -> None:
    """60 sessions at once: each is made or refused with a 4xx, none is a 5xx, and the
    server, the sandbox and the other org carry on."""
    rss_before = _server_rss_mb(security_server)
    with alpha.http(alpha.api_key("developer")) as http:
        answers = [
            http.post(f"/sandboxes/{box}/exec", json={"cmd": "sleep", "args": ["30"]}) for _ in range(60)
        ]
        assert all(a.status_code in (201, 409, 429) for a in answers), {a.status_code for a in answers}
        unnoticed()
        for answer in answers:
            if answer.status_code == 201:
                http.post(f"/sandboxes/{box}/exec/{answer.json()['sessionID']}/kill", json={"signal": 9})
    assert alpha.run(box, "echo alive")["stdout"] == "alive\n"
    assert _server_rss_mb(security_server) - rss_before < 100
