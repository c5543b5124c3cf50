"""WebSockets through the gateway, with the ``websockets`` client: echo of text and
binary, subprotocols, close codes both ways, refusals, auth."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.app import KEY
from tests.support.conditions import eventually_async
from tests.support.sockets import refused_port
from tests.unit.gateway.conftest import Gw

pytestmark = pytest.mark.asyncio(loop_scope="module")


def ws_path(gw: Gw, path: str = "/ws", port: int | None = None) -> str:
    return f"ws://127.0.0.1:{gw.server.port}/preview/{gw.sid}/{port or gw.port}{path}"


def ws_host(gw: Gw, path: str = "/ws") -> str:
    """By host: connect with ``host="127.0.0.1"`` (``LOOPBACK``); the URI's host is sent."""
    return f"ws://{gw.port}-{gw.sid}.localhost:{gw.server.port}{path}"


LOOPBACK = {"host": "127.0.0.1"}


async def test_echo_of_text_and_binary_by_host_and_by_path(gw: Gw) -> None:
    big = os.urandom(1024 * 1024)
    for url, headers in (
        (ws_host(gw), {"X-API-Key": KEY}),
        (ws_path(gw), {"Authorization": f"Bearer {KEY}"}),
    ):
        async with websockets.connect(url, additional_headers=headers, max_size=None, **LOOPBACK) as ws:
            await ws.send("hello ✓")
            assert await asyncio.wait_for(ws.recv(), 5) == "hello ✓"
            await ws.send(b"\x00\x01\xff")
            assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\xff"
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big


async def test_a_browser_like_client_with_the_preview_token(gw: Gw) -> None:
    async with websockets.connect(ws_path(gw, f"/ws?token={gw.preview_token}")) as ws:
        await ws.send("via query")
        assert await asyncio.wait_for(ws.recv(), 5) == "via query"
    cookie = {"Cookie": f"corral_preview_token={gw.preview_token}"}
    async with websockets.connect(ws_host(gw), additional_headers=cookie, **LOOPBACK) as ws:
        await ws.send("via cookie")
        assert await asyncio.wait_for(ws.recv(), 5) == "via cookie"


async def test_subprotocol_and_cookies_of_the_handshake(gw: Gw) -> None:
    headers = {"X-API-Key": KEY}
    offered = ["chat", "other"]
    async with websockets.connect(
        ws_host(gw),
        additional_headers=headers,
        subprotocols=offered,
        **LOOPBACK,  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response is not None
        assert ws.response.headers["Set-Cookie"] == "ws=1"  # Domain=localhost dropped: it stays with its host


async def test_the_servers_close_code_reaches_the_client(gw: Gw) -> None:
    async with websockets.connect(ws_path(gw), additional_headers={"X-API-Key": KEY}) as ws:
        await ws.send("close:4321")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert (ws.close_code, ws.close_reason) == (4321, "bye")


async def test_the_clients_close_code_reaches_the_server(gw: Gw, client: httpx.AsyncClient) -> None:
    async with websockets.connect(ws_path(gw), additional_headers={"X-API-Key": KEY}) as ws:
        await ws.send("x")
        await ws.recv()
        await ws.close(4111, "done")

    async def seen_by_the_server() -> bool:
        last = await client.get(f"{gw.path_url('/ws-last-close')}", headers={"X-API-Key": KEY})
        return bool(last.json() == 4111)

    await eventually_async(seen_by_the_server, 5, "the server never saw close code 4111")


async def test_a_refusal_by_the_server_is_passed_on(gw: Gw) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(ws_path(gw, "/ws-refuse"), additional_headers={"X-API-Key": KEY}):
            pass
    assert refused.value.response.status_code == 403
    assert refused.value.response.body == b"refused by the sandbox"
    assert refused.value.response.headers["X-Why"] == "test"


@pytest.mark.parametrize(
    ("headers", "port", "status"),
    [({}, None, 401), ({"X-API-Key": "other"}, None, 404), ({"X-API-Key": KEY}, "free", 502)],
    ids=["no-credentials", "other-org", "nothing-listens"],
)
async def test_handshake_errors_are_http_answers(
    gw: Gw, headers: dict[str, str], port: str | None, status: int
) -> None:
    headers = {"X-API-Key": gw.server.other_key} if headers.get("X-API-Key") == "other" else headers
    with refused_port() as nothing, pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            ws_path(gw, port=nothing if port else None), additional_headers=headers
        ):
            pass
    assert refused.value.response.status_code == status
    assert refused.value.response.body.startswith(b'{"error": ')


async def test_many_round_trips_keep_order(gw: Gw) -> None:
    async with websockets.connect(ws_path(gw), additional_headers={"X-API-Key": KEY}) as ws:
        for i in range(200):
            await ws.send(str(i))
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(200)]
    assert got == [str(i) for i in range(200)]
