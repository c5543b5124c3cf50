"""Exec, files and PTY routes, in-process, on both mounts."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.conditions import eventually_async
from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


# ---- exec ---------------------------------------------------------------------------


async def test_exec_run_on_both_mounts(api: Api) -> None:
    body = {"cmd": "sh", "args": ["-c", "echo out; echo err >&2; exit 3"]}
    for prefix, headers in [("/api", {}), ("", {**api.token, "X-API-Key": ""})]:
        response = await api.client.post(f"{prefix}/sandboxes/{api.sid}/exec/run", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"exitCode": 3, "stdout": "out\n", "stderr": "err\n"}


async def test_exec_run_envs_cwd_and_async_wake_header(api: Api) -> None:
    body = {"cmd": "sh", "args": ["-c", "echo $A:$(pwd)"], "envs": {"A": "x"}, "cwd": "/"}
    response = await api.client.post(
        f"/api/sandboxes/{api.sid}/exec/run", json=body, headers={"X-OSB-Async-Wake": "1"}
    )
    assert response.json()["stdout"] == "x:/\n"


async def test_exec_output_is_utf8_with_replacement(api: Api) -> None:
    body = {"cmd": "printf", "args": ["caf\\303\\251 \\377"]}
    response = await api.client.post(f"/api/sandboxes/{api.sid}/exec/run", json=body)
    assert response.json()["stdout"] == "café \ufffd"


async def test_exec_run_timeout_is_a_result(api: Api) -> None:
    body = {"cmd": "sleep", "args": ["30"], "timeout": 1}
    response = await api.client.post(f"/api/sandboxes/{api.sid}/exec/run", json=body)
    assert response.status_code == 200 and response.json()["exitCode"] == 124


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "cmd: is required"),
        ({"cmd": ""}, "cmd: must be a non-empty string"),
        ({"cmd": 5}, "cmd: must be a string"),
        ({"cmd": "echo", "args": "a b"}, "args: must be an array"),
        ({"cmd": "echo", "args": [1]}, "args[0]: must be a string"),
        ({"cmd": "echo", "timeout": 0}, "timeout: must be between 1 and"),
        ({"cmd": "echo", "timeout": "5"}, "timeout: must be an integer"),
        ({"cmd": "echo", "cwd": "relative"}, "cwd: must be an absolute path"),
        ({"cmd": "echo", "envs": {"A": None}}, "envs.A: must be a string"),
    ],
)
async def test_exec_run_rejects_bad_input(api: Api, body: dict[str, Any], message: str) -> None:
    for route in ("exec/run", "exec/run-async"):
        response = await api.client.post(f"/api/sandboxes/{api.sid}/{route}", json=body)
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]


async def test_run_async_then_poll_the_result(api: Api, tmp_path: Path) -> None:
    gate = tmp_path / "go"  # the command ends once the first poll has seen it running
    body = {"cmd": "sh", "args": ["-c", f"while [ ! -e {gate} ]; do sleep 0.02; done; echo done; exit 4"]}
    started = await api.client.post(f"/api/sandboxes/{api.sid}/exec/run-async", json=body)
    assert started.status_code == 201
    exec_id = started.json()["execId"]
    url = f"/api/sandboxes/{api.sid}/exec/{exec_id}/result"
    first = (await api.client.get(url)).json()
    assert first == {
        "execId": exec_id,
        "running": True,
        "exitCode": None,
        "stdout": "",
        "stderr": "",
        "error": None,
    }
    gate.touch()

    async def ended() -> bool:
        return (await api.client.get(url)).json()["running"] is False

    await eventually_async(ended, 5)
    state = (await api.client.get(url)).json()
    assert state == {
        "execId": exec_id,
        "running": False,
        "exitCode": 4,
        "stdout": "done\n",
        "stderr": "",
        "error": None,
    }
    for bad in ("ex-0000000000000000", "nope"):
        missing = await api.client.get(f"/api/sandboxes/{api.sid}/exec/{bad}/result")
        assert missing.status_code == 404


async def test_exec_sessions_create_list_kill(api: Api) -> None:
    body = {"cmd": "sleep", "args": ["60"], "maxRunAfterDisconnect": 30, "timeout": 120, "burst": 1}
    created = await api.client.post(f"/api/sandboxes/{api.sid}/exec", json=body)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["sessionID"].startswith("es-") and info["sandboxID"] == api.sid
    assert (info["command"], info["args"], info["running"], info["exitCode"]) == ("sleep", ["60"], True, None)
    assert info["startedAt"].endswith("Z") and info["attachedClients"] == 0

    listed = (
        await api.client.get(f"/sandboxes/{api.sid}/exec", headers={**api.token, "X-API-Key": ""})
    ).json()
    assert info["sessionID"] in {s["sessionID"] for s in listed}

    kill_url = f"/api/sandboxes/{api.sid}/exec/{info['sessionID']}/kill"
    assert (await api.client.post(kill_url, json={"signal": 0})).status_code == 400
    assert (await api.client.post(kill_url, json={"signal": "9"})).json()[
        "error"
    ] == "signal: must be an integer"
    assert (await api.client.post(kill_url, json={})).status_code == 204  # the TypeScript SDK's body

    async def killed() -> bool:
        found = {s["sessionID"]: s for s in (await api.client.get(f"/api/sandboxes/{api.sid}/exec")).json()}
        return found[info["sessionID"]]["running"] is False

    await eventually_async(killed, 5, "the session still runs")


@pytest.mark.parametrize("session_id", ["es-0000000000000000", "nope", "ps"])
async def test_kill_unknown_or_malformed_session_is_404(api: Api, session_id: str) -> None:
    response = await api.client.post(f"/api/sandboxes/{api.sid}/exec/{session_id}/kill", json={"signal": 9})
    assert response.status_code == 404, response.text


async def test_exec_session_rejects_bad_input(api: Api) -> None:
    for body, message in [
        ({"cmd": "sleep", "maxRunAfterDisconnect": -1}, "maxRunAfterDisconnect:"),
        ({"cmd": "sleep", "maxRunAfterDisconnect": "x"}, "maxRunAfterDisconnect: must be an integer"),
        ({"args": ["1"]}, "cmd: is required"),
    ]:
        response = await api.client.post(f"/api/sandboxes/{api.sid}/exec", json=body)
        assert response.status_code == 400 and message in response.json()["error"], response.text


# ---- files --------------------------------------------------------------------------


@pytest.fixture
def workdir() -> str:
    return f"/tmp/corral-api-{uuid.uuid4().hex[:12]}"


async def test_files_write_read_list_mkdir_remove(api: Api, workdir: str) -> None:
    base = f"/api/sandboxes/{api.sid}/files"
    path = f"{workdir}/sub/hello.txt"
    written = await api.client.put(base, params={"path": path}, content="héllo\n".encode())
    assert written.status_code == 204 and written.content == b""
    read = await api.client.get(base, params={"path": path})
    assert read.status_code == 200 and read.content == "héllo\n".encode()
    assert read.headers["content-type"].startswith("text/plain")

    assert (
        await api.client.post(f"{base}/mkdir", params={"path": f"{workdir}/empty/deep"})
    ).status_code == 204
    listing = await api.client.get(f"{base}/list", params={"path": workdir})
    assert listing.status_code == 200
    entries = {e["name"]: e for e in listing.json()}
    assert entries["sub"] == {
        "name": "sub",
        "isDir": True,
        "size": entries["sub"]["size"],
        "path": f"{workdir}/sub",
    }
    assert entries["empty"]["isDir"] is True
    sub = (await api.client.get(f"{base}/list", params={"path": f"{workdir}/sub"})).json()
    assert sub == [{"name": "hello.txt", "isDir": False, "size": 7, "path": path}]

    assert (await api.client.delete(base, params={"path": workdir})).status_code == 204
    assert (await api.client.get(base, params={"path": path})).status_code == 404
    assert (await api.client.delete(base, params={"path": workdir})).status_code == 404


async def test_files_errors(api: Api, workdir: str) -> None:
    base = f"/api/sandboxes/{api.sid}/files"
    await api.client.post(f"{base}/mkdir", params={"path": workdir})
    try:
        for method, url, params, status, message in [
            ("GET", base, {}, 400, "path: is required"),
            ("PUT", base, {}, 400, "path: is required"),
            ("DELETE", base, {}, 400, "path: is required"),
            ("POST", f"{base}/mkdir", {}, 400, "path: is required"),
            ("GET", base, {"path": f"{workdir}/missing"}, 404, ""),
            ("GET", base, {"path": workdir}, 400, ""),  # a directory
            ("GET", f"{base}/list", {"path": f"{workdir}/missing"}, 404, ""),
            ("DELETE", base, {"path": "/"}, 400, "path:"),
        ]:
            response = await api.client.request(
                method, url, params=params, content=b"x" if method == "PUT" else None
            )
            assert response.status_code == status, (method, params, response.text)
            assert message in response.json()["error"]
    finally:
        await api.client.delete(base, params={"path": workdir})


async def test_large_files_stream_both_ways(api: Api, workdir: str) -> None:
    base = f"/sandboxes/{api.sid}/files"
    headers = {**api.token, "X-API-Key": ""}
    chunk = bytes(range(256)) * 4096  # 1 MiB
    sent = hashlib.sha256()

    async def body() -> AsyncIterator[bytes]:
        for i in range(12):
            piece = chunk[i:] + chunk[:i]
            sent.update(piece)
            yield piece

    path = f"{workdir}/big.bin"
    response = await api.client.put(base, params={"path": path}, content=body(), headers=headers)
    assert response.status_code == 204, response.text
    got = hashlib.sha256()
    size = 0
    async with api.client.stream("GET", base, params={"path": path}, headers=headers) as streamed:
        assert streamed.status_code == 200
        async for piece in streamed.aiter_bytes():
            got.update(piece)
            size += len(piece)
    assert size == 12 * len(chunk) and got.hexdigest() == sent.hexdigest()
    await api.client.delete(base, params={"path": workdir}, headers=headers)


# ---- PTY ----------------------------------------------------------------------------


async def test_pty_create_resize_kill(api: Api) -> None:
    base = f"/api/sandboxes/{api.sid}/pty"
    created = await api.client.post(base, json={"cols": 100, "rows": 30, "shell": "/bin/sh"})
    assert created.status_code == 201, created.text
    info = created.json()
    assert set(info) == {"sessionID", "sandboxID"} and info["sessionID"].startswith("ps-")
    resized = await api.client.post(f"{base}/{info['sessionID']}/resize", json={"cols": 120, "rows": 40})
    assert resized.status_code == 200 and resized.json() == {}
    assert (await api.client.delete(f"{base}/{info['sessionID']}")).status_code == 204
    default = await api.client.post(base)
    assert default.status_code == 201
    await api.client.delete(f"{base}/{default.json()['sessionID']}")


async def test_pty_rejects_bad_input(api: Api) -> None:
    base = f"/api/sandboxes/{api.sid}/pty"
    for body, message in [
        ({"cols": 0}, "cols: must be between 1 and"),
        ({"rows": 5000}, "rows: must be between 1 and"),
        ({"cols": "80"}, "cols: must be an integer"),
        ({"shell": "bash"}, "shell: must be an absolute path"),
    ]:
        response = await api.client.post(base, json=body)
        assert response.status_code == 400 and message in response.json()["error"], response.text
    resize = await api.client.post(f"{base}/ps-0000000000000000/resize", json={"cols": 80})
    assert resize.status_code == 400 and resize.json()["error"] == "rows: is required"
    for bad in ("nope", "es-0000000000000000"):
        assert (
            await api.client.post(f"{base}/{bad}/resize", json={"cols": 80, "rows": 24})
        ).status_code == 404
        assert (await api.client.delete(f"{base}/{bad}")).status_code == 404
    assert (await api.client.delete(f"{base}/ps-0000000000000000")).status_code == 404
