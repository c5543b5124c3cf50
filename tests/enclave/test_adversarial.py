"""The supplement's adversarial run, for real on runc: exfiltration to a host not
allowed and a grab at the metadata address (denied, ``egress_denied`` in the trail,
from the host's enforcement), resource exhaustion (memory, forks, the wall clock, CPU
time, output: each killed with its reason, the server answering throughout), a read
of the host's files (nothing of the host visible), and a clean computation; no secret
in any answer."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.enclave.conftest import Org, Server

pytestmark = pytest.mark.integration

CONNECT = """
import socket, time
try:
    socket.create_connection(({host!r}, {port}), timeout=2).close()
    print("connected")
except OSError as exc:
    print("refused", type(exc).__name__)
time.sleep(0.5)  # the host logs the denial meanwhile (its record reaches the trail at once)
"""


def result_of(run: dict[str, Any]) -> dict[str, Any]:
    return next(f["result"] for f in run["frames"] if f["kind"] == "result")


def denials(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in run["audit"] if e["type"] == "egress_denied"]


@pytest.mark.parametrize(
    ("host", "egress"),
    [
        ("203.0.113.7", {"mode": "deny_all", "allow": []}),
        ("203.0.113.7", {"mode": "allowlist", "allow": ["198.51.100.0/24"]}),
        ("169.254.169.254", {"mode": "allowlist", "allow": ["169.254.0.0/16", "0.0.0.0/0"]}),
    ],
)
def test_egress_not_allowed_is_denied_and_audited(alpha: Org, host: str, egress: dict[str, Any]) -> None:
    run = alpha.run({"code": CONNECT.format(host=host, port=80), "egress": egress})
    assert result_of(run)["stdout"].startswith("refused"), result_of(run)
    denied = denials(run)
    assert denied and all(d["dst"] == host and d["port"] == 80 for d in denied), run["audit"]
    order = [e["type"] for e in run["audit"]]
    assert order.index("sandbox_started") < order.index("egress_denied") < order.index("workload_exited")
    assert [f["event"] for f in run["frames"] if f["kind"] == "audit"] == run["audit"]


@pytest.mark.parametrize(
    ("code", "limits", "reason"),
    [
        ("b = []\nwhile True:\n    b.append(bytearray(16 << 20))\n", {"memoryMiB": 96}, "memory_exceeded"),
        ("import os\nwhile True:\n    os.fork()\n", {"pids": 32}, "pids_exceeded"),
        (
            "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n",
            {"wallClockSeconds": 2},
            "wall_clock_exceeded",
        ),
        ("while True:\n    pass\n", {"cpuSeconds": 1, "wallClockSeconds": 30}, "cpu_exceeded"),
    ],
)
def test_exhaustion_is_killed_with_its_reason(
    enclave: Server, alpha: Org, code: str, limits: dict[str, Any], reason: str
) -> None:
    run = alpha.run({"code": code, "limits": limits})
    session, result = run["session"], result_of(run)
    assert session["outcome"] == "killed" and session["killReason"] == reason, session
    assert result["killReason"] == reason and result["exitCode"] != 0
    assert run["frames"][-1] == {**run["frames"][-1], "kind": "end", "phase": "killed"}
    quota = [e for e in run["audit"] if e["type"] == "quota_killed"]
    assert quota == [{**quota[0], "reason": reason}]
    assert httpx.get(f"{enclave.url}/healthz", timeout=10).status_code == 200


def test_output_without_end_is_bounded_and_the_server_answers(enclave: Server, alpha: Org) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    with alpha.http() as http:
        sid = http.post("/sessions", json={"code": code, "limits": {"wallClockSeconds": 3}}).json()["id"]
        assert httpx.get(f"{enclave.url}/healthz", timeout=10).status_code == 200
        result = None
        with http.stream("GET", f"/sessions/{sid}/stream") as answer:
            for line in answer.iter_lines():
                if line.startswith('data: {"kind":"result"'):
                    result = json.loads(line[6:])["result"]
    assert result is not None
    assert result["killReason"] == "wall_clock_exceeded"
    assert result["stdoutTruncated"] is True and len(result["stdout"]) == 1 << 20


def test_nothing_of_the_host_is_visible(enclave: Server, alpha: Org, tmp_path: Path) -> None:
    marker = Path("/tmp") / f"enclave-host-marker-{secrets.token_hex(8)}"
    marker.write_text("host secret")
    try:
        code = f"""
import os
def environ(pid):
    try:
        return open(f"/proc/{{pid}}/environ", errors="replace").read()
    except OSError as exc:
        return type(exc).__name__
seen = {{
    "marker": os.path.exists({str(marker)!r}),
    "data_dir": os.path.exists({str(enclave.data_dir)!r}),
    "work_dir": os.path.exists({str(enclave.log.parent)!r}),
    "root": sorted(os.listdir("/")),
    "environ": [environ(p) for p in os.listdir("/proc") if p.isdigit()] + [str(os.environ)],
}}
enclave.result(seen)
"""
        run = alpha.run({"code": code})
        seen = result_of(run)["result"]
        assert seen["marker"] is False and seen["data_dir"] is False and seen["work_dir"] is False, seen
        assert "corral-enclave" not in json.dumps(seen["root"])
        environs = json.dumps(seen["environ"])
        assert "ENCLAVE_SESSION_ID" in environs  # what it read was the sandbox's own
        for secret in (enclave.jwt_secret, alpha.key, "CORRAL_"):
            assert secret not in environs
        assert run["session"]["outcome"] == "succeeded"
    finally:
        marker.unlink()


def test_a_clean_computation_succeeds_and_no_answer_holds_a_secret(enclave: Server, alpha: Org) -> None:
    token = enclave.token(alpha.key)
    run = alpha.run(
        {"code": "enclave.result({'primes': [n for n in range(2, 30) if all(n % d for d in range(2, n))]})"},
        token,
    )
    assert run["session"]["outcome"] == "succeeded"
    assert result_of(run)["result"] == {"primes": [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]}
    answers = json.dumps(run)
    with alpha.http() as http:
        sid = run["session"]["id"]
        answers += http.get(f"/sessions/{sid}/result").text + http.get(f"/sessions/{sid}").text
    for secret in (alpha.key.split("_")[-1], enclave.jwt_secret, token):
        assert secret not in answers
