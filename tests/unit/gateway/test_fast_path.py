"""The gateway's fast path (``corral.gateway.fast_path``) and the connection that reads every
request first (``corral.api.front``): keep-alive requests answered without ASGI give
the same answers as the ASGI path, failures on the fast path, requests pipelined across the
fast path and the API, a WebSocket after fast-path requests on one connection."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import httpx
import pytest

from tests.support.app import KEY
from tests.support.conditions import eventually_async
from tests.unit.gateway.conftest import ALLOWED_ORIGIN, Gw

pytestmark = pytest.mark.asyncio(loop_scope="module")
OWNER = {"X-API-Key": KEY}
# The ASGI path answers a request that names a trusted proxy's client (uvicorn's proxy
# headers middleware resolves it; the fast path leaves such requests to it): the sandbox sees
# the same X-Forwarded-For either way.
VIA_ASGI = {"X-Forwarded-For": "127.0.0.1"}


def same(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = sorted((k, v) for k, v in response.headers.multi_items() if k != "date")
    return response.status_code, headers, response.content


@pytest.mark.parametrize(
    "path",
    ["/hello", "/headers/a%2Fb?x=1&y=%20z", "/redirect", "/cookie", "/cors", "/no-such-page"],
)
async def test_the_lane_answers_as_the_asgi_path_does(gw: Gw, path: str) -> None:
    fast_path = gw.gateway.fast_path
    for url, route in ((gw.url(path), gw.host_header()), (gw.path_url(path), {})):
        headers = {**OWNER, **route, "Origin": ALLOWED_ORIGIN}
        async with httpx.AsyncClient(timeout=30) as client:
            # a pooled connection into the sandbox, and the grant cached
            await client.get(gw.url("/hello"), headers={**OWNER, **gw.host_header()})
            before = fast_path.served
            fast = await client.get(url, headers=headers)
            assert fast_path.served == before + 1, "the keep-alive request took the fast path"
            slow = await client.get(url, headers={**headers, **VIA_ASGI})
            assert fast_path.served == before + 1, "X-Forwarded-For takes the ASGI path"
        assert same(fast) == same(slow)
        assert fast.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def test_head_requests_and_many_in_a_row_on_the_lane(gw: Gw) -> None:
    fast_path = gw.gateway.fast_path
    async with httpx.AsyncClient(timeout=30, headers={**OWNER, **gw.host_header()}) as client:
        await client.get(gw.url("/hello"))
        before = fast_path.served
        head = await client.head(gw.url("/hello"))
        bodies = [(await client.get(gw.url("/hello"))).text for _ in range(50)]
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "22")
    assert bodies == ["hello from the sandbox"] * 50
    assert fast_path.served == before + 51


async def test_a_server_failing_on_the_lane_is_502_before_its_answer_and_a_cut_after(gw: Gw) -> None:
    fast_path = gw.gateway.fast_path
    async with httpx.AsyncClient(timeout=30, headers={**OWNER, **gw.host_header()}) as client:
        await client.get(gw.url("/hello"))
        before = fast_path.served
        died = await client.get(gw.url("/die"))  # the pooled connection is tried, then a new one
        assert died.status_code == 502 and "closed the connection" in died.json()["error"]
        assert fast_path.served == before + 1
        await client.get(gw.url("/hello"))
        garbage = await client.get(gw.url("/garbage"))
        assert garbage.status_code == 502 and "not valid HTTP" in garbage.json()["error"]
        await client.get(gw.url("/hello"))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(gw.url("/die-mid"))
        assert (await client.get(gw.url("/hello"))).text == "hello from the sandbox"


async def test_a_client_leaving_the_lane_frees_the_sandbox_side(gw: Gw) -> None:
    headers = {**OWNER, **gw.host_header()}
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    hello = f"GET /hello HTTP/1.1\r\nHost: {headers['Host']}\r\nX-API-Key: {KEY}\r\n\r\n".encode()
    writer.write(hello)
    assert (await reader.readuntil(b"hello from the sandbox")).startswith(b"HTTP/1.1 200")
    before = gw.gateway.fast_path.served
    writer.write(hello.replace(b"/hello", b"/hang"))
    await writer.drain()
    # the fast path took it and waits on the sandbox
    await eventually_async(lambda: gw.gateway.fast_path.served == before + 1, 5)
    writer.close()
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:

        async def client_gone() -> bool:
            return (await client.get(gw.url("/state"))).json()["hang_ended"] is True

        await eventually_async(client_gone, 5, "the sandbox's server never saw the client go")


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    ]
    return head, await reader.readexactly(lengths[0] if lengths else 0)


async def test_pipelined_requests_across_the_lane_and_the_api_are_answered_in_order(
    gw: Gw, tmp_path: Path
) -> None:
    host = gw.host_header()["Host"]
    lane_request = f"GET /headers/{{n}} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n\r\n"
    api_request = f"GET /api/sandboxes/{gw.sid} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n\r\n"
    upload = (
        f"PUT /api/sandboxes/{gw.sid}/files?path={tmp_path}/fast_path-{{n}} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    async with httpx.AsyncClient(timeout=30, headers={**OWNER, **gw.host_header()}) as client:
        # several pooled connections into the sandbox, so each fast-path request finds one
        await asyncio.gather(*(client.get(gw.url("/hello")) for _ in range(8)))
    fast_path = gw.gateway.fast_path
    before = fast_path.served
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        sequence = [
            lane_request.format(n=1),
            api_request,
            lane_request.format(n=2),
            lane_request.format(n=3),
            upload.format(n=4),
            lane_request.format(n=5),
        ]
        writer.write("".join(sequence).encode())  # all at once: one read holds several
        answers = [await _read_response(reader) for _ in sequence]
    finally:
        writer.close()
    assert [a[0].split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4 + [
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 200 OK",
    ]
    assert b'"target": "/headers/1"' in answers[0][1]
    assert f'"sandboxID":"{gw.sid}"'.encode() in answers[1][1]
    assert b'"target": "/headers/2"' in answers[2][1] and b'"target": "/headers/3"' in answers[3][1]
    assert b'"target": "/headers/5"' in answers[5][1]
    assert fast_path.served == before + 4  # the fast path answered its four, each after the one before


async def test_a_websocket_after_lane_requests_on_one_connection(gw: Gw) -> None:
    host = gw.host_header()["Host"]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(f"GET /hello HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n\r\n".encode() * 2)
        for _ in range(2):
            assert (await _read_response(reader))[1] == b"hello from the sandbox"
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        mask = os.urandom(4)
        payload = b"through the fast path's connection"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        frame = await reader.readexactly(2 + len(payload))
        assert frame == bytes([0x81, len(payload)]) + payload
    finally:
        writer.close()


async def test_an_upgrade_other_than_websocket_is_a_plain_request_and_the_connection_goes_on(gw: Gw) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.server.port)
    try:
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
        )
        first = await _read_response(reader)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        second = await _read_response(reader)
    finally:
        writer.close()
    for head, body in (first, second):
        assert head.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in body


async def test_a_lane_answer_is_in_the_access_log_when_it_is_on(caplog: pytest.LogCaptureFixture) -> None:
    from types import SimpleNamespace

    from corral.api.front import FrontProtocol
    from corral.api.uvicorn_internals import Config, ServerState

    front = FrontProtocol(Config(app=None, access_log=True, log_config=None), ServerState(), {})
    front._client = ("203.0.113.7", 4711)
    front._url = b"/preview/sb-x/3000/page?x=1"  # the request's, as the client sent it
    exchange = SimpleNamespace(method="GET", status=200)
    with caplog.at_level("INFO", logger="uvicorn.access"):
        front.exchange_finished(exchange)  # type: ignore[arg-type]
    assert '203.0.113.7:4711 - "GET /preview/sb-x/3000/page?x=1 HTTP/1.1" 200' in caplog.text
    assert front.server_state.total_requests == 1


async def test_a_remembered_grant_ends_with_what_it_was_decided_from(gw: Gw) -> None:
    """On one keep-alive connection: a rotated preview token, a deleted preview URL and
    the kill switch take effect at the next request, also once the sandbox's route is
    cached again."""
    fast_path = gw.gateway.fast_path
    core = gw.server.core

    async def status(headers: dict[str, str]) -> int:
        return (await client.get(gw.url("/hello"), headers=headers)).status_code

    first = {
        "X-OC-Preview-Token": (await gw.api.post(f"/sandboxes/{gw.sid}/preview/rotate")).json()[
            "previewAuthToken"
        ]
    }
    async with httpx.AsyncClient(timeout=30, headers=gw.host_header()) as client:
        assert [await status(first), await status(OWNER)] == [200, 200]
        before = fast_path.served
        assert [await status(first), await status(OWNER)] == [200, 200]
        assert fast_path.served == before + 2  # both remembered

        second = {
            "X-OC-Preview-Token": (await gw.api.post(f"/sandboxes/{gw.sid}/preview/rotate")).json()[
                "previewAuthToken"
            ]
        }
        assert [await status(second), await status(second), await status(first)] == [200, 200, 401]

        assert [await status(OWNER), await status(OWNER)] == [200, 200]
        core.kill_switch.engage()
        try:
            assert await status(OWNER) == 503
        finally:
            core.kill_switch.release()
        assert await status(OWNER) == 200

        assert (await gw.api.delete(f"/sandboxes/{gw.sid}/preview/{gw.port}")).status_code == 204
        try:
            assert [await status(second), await status(OWNER), await status(second)] == [404, 200, 404]
        finally:
            assert (
                await gw.api.post(f"/sandboxes/{gw.sid}/preview", json={"port": gw.port})
            ).status_code == 201


async def test_a_failure_of_the_lane_itself_is_a_logged_500_not_a_client_error(
    gw: Gw, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(gw.gateway.fast_path, "start", broken)
    async with httpx.AsyncClient(timeout=30, headers={**OWNER, **gw.host_header()}) as client:
        with caplog.at_level("ERROR", logger="corral.api"):
            answer = await client.get(gw.url("/hello"))
    assert (answer.status_code, answer.text) == (500, "internal error")
    assert "a bug in the fast path" in caplog.text


async def test_grants_with_large_cookies_are_not_remembered_but_still_granted(gw: Gw) -> None:
    access = gw.gateway.access
    cookie = {"Cookie": "app=" + "x" * 2000}
    async with httpx.AsyncClient(timeout=30, headers={**OWNER, **gw.host_header(), **cookie}) as client:
        answers = [(await client.get(gw.url("/hello"))).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert not [key for key in access._grants if any(b"x" * 2000 in v for _, v in key[2])]


async def test_a_key_revoked_on_this_node_stops_at_once_on_the_lane_too(gw: Gw) -> None:
    created = await gw.api.post("/keys", json={"role": "owner", "name": "short-lived"})
    assert created.status_code == 201, created.text
    key = created.json()
    async with httpx.AsyncClient(timeout=30, headers={"X-API-Key": key["key"], **gw.host_header()}) as client:
        assert [(await client.get(gw.url("/hello"))).status_code for _ in range(3)] == [200, 200, 200]
        assert (await gw.api.delete(f"/keys/{key['id']}")).status_code == 204
        assert (await client.get(gw.url("/hello"))).status_code == 401
