"""Exec and PTY WebSockets against a real uvicorn server (what the SDKs talk to)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from tests.support.app import KEY
from tests.support.conditions import eventually_async
from tests.unit.api.conftest import Live

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Box:
    live: Live
    http: httpx.AsyncClient
    sid: str
    token: str

    async def session(self, script: str) -> str:
        response = await self.http.post(
            f"/api/sandboxes/{self.sid}/exec", json={"cmd": "sh", "args": ["-c", script]}
        )
        assert response.status_code == 201, response.text
        return str(response.json()["sessionID"])

    def exec_url(self, session_id: str, query: str | None = None) -> str:
        return f"{self.live.ws_url}/sandboxes/{self.sid}/exec/{session_id}?{query or 'token=' + self.token}"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def box(live: Live) -> AsyncIterator[Box]:
    async with httpx.AsyncClient(base_url=live.url, headers={"X-API-Key": KEY}, timeout=30) as http:
        sb = (await http.post("/api/sandboxes", json={})).json()
        yield Box(live, http, sb["sandboxID"], sb["token"])
        await http.delete(f"/api/sandboxes/{sb['sandboxID']}")


async def frames(ws: ClientConnection, timeout: float = 10) -> list[bytes]:
    """Every frame until the server closes."""
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for message in ws:
            assert isinstance(message, bytes), "server frames are binary"
            got.append(message)
    return got


async def read_until(ws: ClientConnection, needle: bytes, timeout: float = 10) -> bytes:
    seen = b""
    async with asyncio.timeout(timeout):
        while needle not in seen:
            message = await ws.recv()
            seen += message if isinstance(message, bytes) else message.encode()
    return seen


def stream(got: list[bytes], prefix: int) -> bytes:
    return b"".join(f[1:] for f in got if f[0] == prefix)


async def test_exec_session_protocol(box: Box) -> None:
    sid = await box.session("echo ready; read line; echo got:$line; echo oops >&2; exit 3")
    async with websockets.connect(box.exec_url(sid)) as ws:
        await read_until(ws, b"ready")
        await ws.send(b"\x00hello\n")
        got = await frames(ws)
        assert ws.close_code == 1000
    assert b"got:hello" in stream(got, 0x01) and stream(got, 0x02) == b"oops\n"
    assert got[-1] == b"\x03" + struct.pack(">i", 3)


async def test_reattach_replays_scrollback_then_marker_then_exit(box: Box) -> None:
    sid = await box.session("echo one; echo two >&2")

    async def finished() -> bool:
        listed = (await box.http.get(f"/api/sandboxes/{box.sid}/exec")).json()
        return any(s["sessionID"] == sid and not s["running"] for s in listed)

    await eventually_async(finished, 10, "the session never finished")
    async with websockets.connect(box.exec_url(sid)) as ws:
        got = await frames(ws)
    marker = got.index(b"\x04")
    before = got[:marker]
    assert stream(before, 0x01) == b"one\n" and stream(before, 0x02) == b"two\n"
    assert got[marker + 1 :] == [b"\x03\x00\x00\x00\x00"]


async def test_text_frames_and_the_control_plane_with_api_key(box: Box) -> None:
    sid = await box.session("read line; echo got:$line")
    url = f"{box.live.ws_url}/api/sandboxes/{box.sid}/exec/{sid}?api_key={KEY}"
    async with websockets.connect(url) as ws:
        await ws.send("\x00text\n")
        got = await frames(ws)
    assert stream(got, 0x01) == b"got:text\n"


async def test_disconnect_detaches_without_killing(box: Box) -> None:
    sid = await box.session("read line; echo got:$line")
    async with websockets.connect(box.exec_url(sid)) as ws:
        assert await ws.recv() == b"\x04"

    async def session() -> dict[str, Any]:
        listed = {s["sessionID"]: s for s in (await box.http.get(f"/api/sandboxes/{box.sid}/exec")).json()}
        return dict(listed[sid])

    async def detached() -> bool:
        return (await session())["attachedClients"] == 0

    await eventually_async(detached, 5, "still attached")
    assert (await session())["running"] is True
    async with websockets.connect(box.exec_url(sid)) as ws:  # still there to talk to
        assert await ws.recv() == b"\x04"
        await ws.send(b"\x00back\n")
        got = await frames(ws)
    assert stream(got, 0x01) == b"got:back\n" and got[-1] == b"\x03\x00\x00\x00\x00"


async def test_a_browser_sends_its_credential_in_a_subprotocol_not_the_url(box: Box) -> None:
    sid = await box.session("read line; echo got:$line")
    url = f"{box.live.ws_url}/api/sandboxes/{box.sid}/exec/{sid}"
    async with websockets.connect(
        url, subprotocols=[Subprotocol("corral"), Subprotocol(f"corral.credential.{KEY}")]
    ) as ws:
        assert ws.subprotocol == "corral"  # a browser drops a handshake that accepts none it offered
        await ws.send(b"\x00browser\n")
        got = await frames(ws)
    assert stream(got, 0x01) == b"got:browser\n"
    status, _ = await refused(
        url, subprotocols=[Subprotocol("corral"), Subprotocol("corral.credential.ek_x_y")]
    )
    assert status == 401


async def test_no_permessage_deflate_is_negotiated(box: Box) -> None:
    sid = await box.session("true")
    async with websockets.connect(box.exec_url(sid), compression="deflate") as ws:
        assert ws.request is not None and ws.response is not None
        assert "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await frames(ws)


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(url, **kwargs):
            pass
    response = info.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def test_handshake_is_refused_with_status_and_envelope(box: Box) -> None:
    sid = await box.session("sleep 5")
    base = f"{box.live.ws_url}/sandboxes/{box.sid}/exec"
    status, body = await refused(f"{base}/{sid}")
    assert status == 401 and "?token=" in body["error"]
    status, body = await refused(f"{base}/{sid}?token=not-a-jwt")
    assert status == 401 and "worker token" in body["error"]
    status, body = await refused(f"{base}/{sid}", additional_headers={"Authorization": "Basic x"})
    assert status == 401 and "Bearer" in body["error"]
    for bad in ("es-0000000000000000", "nope"):
        status, body = await refused(f"{base}/{bad}?token={box.token}")
        assert status == 404 and set(body) == {"error"}
    status, _ = await refused(f"{box.live.ws_url}/sandboxes/sb-0000000000000000/exec/{sid}?token={box.token}")
    assert status == 404
    await box.http.post(f"/api/sandboxes/{box.sid}/exec/{sid}/kill", json={})


async def test_worker_token_of_another_sandbox_is_refused(box: Box) -> None:
    other = (await box.http.post("/api/sandboxes", json={})).json()
    try:
        sid = await box.session("sleep 5")
        status, _ = await refused(box.exec_url(sid, f"token={other['token']}"))
        assert status == 404
    finally:
        await box.http.delete(f"/api/sandboxes/{other['sandboxID']}")


async def test_pty_raw_bytes_both_ways(box: Box) -> None:
    created = await box.http.post(
        f"/api/sandboxes/{box.sid}/pty", json={"cols": 80, "rows": 24, "shell": "/bin/sh"}
    )
    pty_id = created.json()["sessionID"]
    url = f"{box.live.ws_url}/sandboxes/{box.sid}/pty/{pty_id}?api_key={box.token}"
    async with websockets.connect(
        url, additional_headers={"X-API-Key": box.token}
    ) as ws:  # the Python SDK's way
        await ws.send(b"echo $((6*7))x\n")
        assert b"42x" in await read_until(ws, b"42x")
        await ws.send("echo $((7*8))y\n")  # text frames are input too
        assert b"56y" in await read_until(ws, b"56y")
        resized = await box.http.post(
            f"/api/sandboxes/{box.sid}/pty/{pty_id}/resize", json={"cols": 100, "rows": 50}
        )
        assert resized.status_code == 200
        await ws.send(b"stty size\n")
        assert b"50 100" in await read_until(ws, b"50 100")
        await ws.send(b"exit\n")
        async with asyncio.timeout(10):
            async for _ in ws:
                pass
        assert ws.close_code == 1000


async def test_input_to_a_pty_of_a_paused_sandbox_resumes_it(box: Box) -> None:
    created = await box.http.post(f"/api/sandboxes/{box.sid}/pty", json={"shell": "/bin/sh"})
    pty_id = created.json()["sessionID"]
    url = f"{box.live.ws_url}/sandboxes/{box.sid}/pty/{pty_id}?api_key={box.token}"
    async with websockets.connect(url) as ws:
        await ws.send(b"echo $((6*7))x\n")
        await read_until(ws, b"42x")
        paused = await box.http.post(f"/api/sandboxes/{box.sid}/pause")
        assert paused.json()["status"] == "paused"
        await ws.send(b"echo $((7*8))y\n")  # the attachment was open before the pause
        assert b"56y" in await read_until(ws, b"56y")
        assert (await box.http.get(f"/api/sandboxes/{box.sid}")).json()["status"] == "running"
        await ws.send(b"exit\n")
