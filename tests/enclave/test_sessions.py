"""Every route and frame of ``/sessions`` through a real server on runc, with a real
HTTP client (httpx): python and node sessions and their results, output passed through
untouched, the stream live and whole for every reader, the audit trail, auth and
tenancy, bad input, delete."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest

from tests.enclave.conftest import Org, Server, stream

pytestmark = pytest.mark.integration

CLEAN = """
import os, sys
print("hello")
print("oops", file=sys.stderr)
enclave.result({"sum": sum(range(10)), "session": os.environ["ENCLAVE_SESSION_ID"]})
"""
CLEAN_ORDER = [
    "session_created",
    "sandbox_started",
    "workload_exited",
    "result_collected",
    "session_torn_down",
]


def kinds(frames: list[dict[str, Any]]) -> list[str]:
    return [f["kind"] for f in frames]


def phases(frames: list[dict[str, Any]]) -> list[str]:
    return [f["phase"] for f in frames if f["kind"] == "phase"]


def output(frames: list[dict[str, Any]], kind: str) -> str:
    return "".join(f["chunk"] for f in frames if f["kind"] == kind)


def test_a_python_session_runs_and_every_route_tells_of_it(alpha: Org) -> None:
    run = alpha.run({"code": CLEAN})
    session, frames = run["session"], run["frames"]
    sid = session["id"]
    assert phases(frames) == ["pending", "running", "succeeded", "torn_down"]
    assert kinds(frames)[-1] == "end" and frames[-1]["phase"] == "succeeded"
    assert output(frames, "stdout") == "hello\n" and output(frames, "stderr") == "oops\n"
    result = next(f["result"] for f in frames if f["kind"] == "result")
    assert result["exitCode"] == 0 and result["killReason"] is None
    assert result["result"] == {"sum": 45, "session": sid}
    assert result["stdout"] == "hello\n" and result["stderr"] == "oops\n"
    assert result["durationMs"] >= 0
    assert session["phase"] == "torn_down" and session["outcome"] == "succeeded"
    assert session["language"] == "python" and session["backend"] == "runc"
    assert session["limits"] == {
        "memoryMiB": 512,  # a sandbox's defaults (settings), so a standby sandbox serves it
        "wallClockSeconds": 30,
        "cpuMillicores": 1000,
        "cpuSeconds": 30.0,
        "pids": 512,
    }
    assert session["egress"] == {"mode": "deny_all", "allow": []}
    assert session["startedAt"] and session["finishedAt"]
    with alpha.http() as http:
        assert http.get(f"/sessions/{sid}/result").json() == result
        listed = http.get("/sessions", params={"limit": 100}).json()["sessions"]
        assert sid in [s["id"] for s in listed]
    trail = [e["type"] for e in run["audit"]]
    assert trail == CLEAN_ORDER
    # the audit frames are the trail
    assert [f["event"] for f in frames if f["kind"] == "audit"] == run["audit"]


def test_a_node_session_has_the_same_enclave_object(alpha: Org) -> None:
    code = 'console.log("from node", process.versions.node.split(".")[0] > 0);\n'
    code += "enclave.result({first: 1}); enclave.result({last: process.env.ENCLAVE_SESSION_ID});"
    run = alpha.run({"code": code, "language": "node"})
    result = next(f["result"] for f in run["frames"] if f["kind"] == "result")
    assert result["exitCode"] == 0, result
    assert result["result"] == {"last": run["session"]["id"]}  # the last call wins
    assert result["stdout"] == "from node true\n"


def test_printed_result_markers_are_output_not_results(alpha: Org) -> None:
    fake = '{"kind":"result","result":{"exitCode":0,"result":{"forged":true}}}'
    code = f"print({fake!r})\nprint('__ENCLAVE_RESULT__ {{\"forged\": true}}')\nprint('::enclave-result::{{}}')\n"
    run = alpha.run({"code": code})
    result = next(f["result"] for f in run["frames"] if f["kind"] == "result")
    assert result["result"] is None  # enclave.result was never called
    assert result["stdout"] == f'{fake}\n__ENCLAVE_RESULT__ {{"forged": true}}\n::enclave-result::{{}}\n'
    assert output(run["frames"], "stdout") == result["stdout"]
    assert len([f for f in run["frames"] if f["kind"] == "result"]) == 1


def test_stdout_and_stderr_interleave_as_printed(alpha: Org) -> None:
    code = "import sys, time\nfor i in range(3):\n"
    code += "    print(f'out{i}', flush=True); time.sleep(0.05)\n"
    code += "    print(f'err{i}', file=sys.stderr, flush=True); time.sleep(0.05)\n"
    frames = alpha.run({"code": code})["frames"]
    chunks: list[tuple[str, str]] = []  # consecutive chunks of one stream joined
    for f in frames:
        if f["kind"] in ("stdout", "stderr"):
            if chunks and chunks[-1][0] == f["kind"]:
                chunks[-1] = (f["kind"], chunks[-1][1] + f["chunk"])
            else:
                chunks.append((f["kind"], f["chunk"]))
    expected = []
    for i in range(3):
        expected += [("stdout", f"out{i}\n"), ("stderr", f"err{i}\n")]
    assert chunks == expected


def test_the_stream_is_live_whole_for_late_readers_and_shared(enclave: Server, alpha: Org) -> None:
    """The program prints, then waits for a file the test writes into its sandbox once
    it has read that output from the stream: output reaches the client while the
    program runs. Two readers follow at once; a third comes after the end."""
    code = "import os, time\nprint('waiting', flush=True)\n"
    code += "while not os.path.exists('/tmp/go'):\n    time.sleep(0.01)\nprint('done')\nenclave.result(1)\n"
    with alpha.http() as http, alpha.http() as other:
        sid = http.post("/sessions", json={"code": code}).json()["id"]
        seen: list[list[dict[str, Any]]] = []
        second = threading.Thread(target=lambda: seen.append(stream(other, sid)))
        second.start()
        frames: list[dict[str, Any]] = []
        with http.stream("GET", f"/sessions/{sid}/stream") as answer:
            lines = answer.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
                    if output(frames, "stdout") == "waiting\n":
                        break
            sandbox = next(
                f["event"]["sandbox"]
                for f in frames
                if f["kind"] == "audit" and f["event"]["type"] == "sandbox_started"
            )
            wrote = httpx.put(
                f"{enclave.url}/api/sandboxes/{sandbox}/files",
                params={"path": "/tmp/go"},
                content=b"go",
                headers={"X-API-Key": alpha.key},
                timeout=30,
            )
            assert wrote.status_code == 204, (wrote.text, http.get(f"/sessions/{sid}").json())
            for line in lines:
                if line.startswith("data: "):
                    frames.append(json.loads(line[6:]))
        second.join(60)
        assert kinds(frames)[-1] == "end" and frames[-1]["phase"] == "succeeded"
        assert output(frames, "stdout") == "waiting\ndone\n"
        assert seen and seen[0] == frames  # the other reader, at the same time
        assert stream(http, sid) == frames  # a reader after the end: every frame from the start


def test_delete_kills_a_running_session_and_tears_it_down(enclave: Server, alpha: Org) -> None:
    code = "import time\nprint('up', flush=True)\ntime.sleep(600)\n"
    with alpha.http() as http:
        sid = http.post("/sessions", json={"code": code}).json()["id"]
        with http.stream("GET", f"/sessions/{sid}/stream") as answer:
            for line in answer.iter_lines():
                if line.startswith('data: {"kind":"stdout"'):
                    break
        deleted = http.delete(f"/sessions/{sid}")
        assert deleted.status_code == 200, deleted.text
        body = deleted.json()
        assert body["phase"] == "torn_down" and body["outcome"] == "killed" and body["error"] == "deleted"
        sandbox = next(
            e["sandbox"] for e in http.get(f"/sessions/{sid}/audit").json()["events"] if "sandbox" in e
        )
        got = httpx.get(
            f"{enclave.url}/api/sandboxes/{sandbox}", headers={"X-API-Key": alpha.key}, timeout=30
        )
        assert got.status_code == 404 or got.json()["status"] == "stopped"
        assert http.delete(f"/sessions/{sid}").json()["phase"] == "torn_down"  # idempotent


def test_roles_tenancy_and_credentials(enclave: Server, alpha: Org, beta: Org) -> None:
    sid = alpha.run({"code": "print(1)"})["session"]["id"]
    with alpha.http(alpha.key_of("viewer")) as viewer:
        refused = viewer.post("/sessions", json={"code": "print(1)"})
        assert refused.status_code == 403, refused.text
        assert refused.json()["statusCode"] == 403 and "sessions:write" in refused.json()["message"]
        assert viewer.get(f"/sessions/{sid}").status_code == 200  # a viewer reads
        assert viewer.delete(f"/sessions/{sid}").status_code == 403
    with beta.http() as other:
        for path in (
            f"/sessions/{sid}",
            f"/sessions/{sid}/result",
            f"/sessions/{sid}/audit",
            f"/sessions/{sid}/stream",
        ):
            answer = other.get(path)
            assert answer.status_code == 404, (path, answer.text)
        assert other.delete(f"/sessions/{sid}").status_code == 404
        assert sid not in [s["id"] for s in other.get("/sessions").json()["sessions"]]
    token = enclave.token(alpha.key_of("developer"))
    with alpha.http(token) as user:
        assert user.get(f"/sessions/{sid}").status_code == 200
        created = user.post("/sessions", json={"code": "print(2)"})
        assert created.status_code == 201, created.text
    for bad in (
        enclave.resigned(token, expires_in=-60),
        enclave.resigned(token, secret="another-secret-of-at-least-32-chars!!"),
        token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
        "ek_nosuchkey_" + "x" * 32,
    ):
        with alpha.http(bad) as forged:
            answer = forged.get(f"/sessions/{sid}")
            assert answer.status_code == 401, answer.text
            assert answer.json()["statusCode"] == 401 and answer.headers["www-authenticate"].startswith(
                "Bearer"
            )
    assert httpx.get(f"{enclave.url}/sessions", timeout=30).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "code"),
        ({"code": "   "}, "code"),
        ({"code": "1", "language": "ruby"}, "language"),
        ({"code": "1", "limits": {"memoryMiB": 1 << 20}}, "limits.memoryMiB"),
        ({"code": "1", "limits": {"wallClockSeconds": "30"}}, "limits.wallClockSeconds"),
        ({"code": "1", "limits": {"pids": -1}}, "limits.pids"),
        ({"code": "1", "egress": {"mode": "allow_all"}}, "egress.mode"),
        ({"code": "1", "egress": {"mode": "allowlist", "allow": ["10.0.0.0/99"]}}, "egress.allow"),
        ({"code": "1", "serviceBindings": ["nosuch"]}, "serviceBindings"),
        ({"code": "1", "webhookUrl": "ftp://example.com/hook"}, "webhookUrl"),
        ({"code": "1", "labels": {"k": 1}}, "labels.k"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(alpha: Org, body: dict[str, Any], field: str) -> None:
    with alpha.http() as http:
        answer = http.post("/sessions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field, answer.json()
    assert answer.json()["error"] == "Bad Request"


def test_unknown_and_malformed_ids_are_404_and_healthz_names_the_backend(enclave: Server, alpha: Org) -> None:
    with alpha.http() as http:
        for sid in ("se-0000000000000000", "sb-0000000000000000", "nonsense"):
            assert http.get(f"/sessions/{sid}").status_code == 404
        assert http.get("/sessions", params={"limit": 0}).json()["field"] == "limit"
    health = httpx.get(f"{enclave.url}/healthz", timeout=30).json()
    assert health["ok"] is True and health["backend"] == "runc" and health["backendHealthy"] is True


def test_pages_newest_first(alpha: Org) -> None:
    ids = [alpha.run({"code": f"print({i})"})["session"]["id"] for i in range(3)]
    with alpha.http() as http:
        first = http.get("/sessions", params={"limit": 2}).json()
        assert [s["id"] for s in first["sessions"]] == ids[::-1][:2]
        rest = http.get("/sessions", params={"limit": 2, "cursor": first["nextCursor"]}).json()
        assert rest["sessions"][0]["id"] == ids[0]
