"""HTTP through the gateway: routing, streaming both ways, headers, CORS, failures of
the sandbox's server, the kill switch."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import threading
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.app import KEY
from tests.support.conditions import eventually_async
from tests.support.sockets import refused_port
from tests.unit.gateway.conftest import ALLOWED_ORIGIN, HEAD_TIMEOUT_S, Gw

pytestmark = pytest.mark.asyncio(loop_scope="module")
OWNER = {"X-API-Key": KEY}


async def test_by_host_in_both_forms_by_extra_domain_and_by_path(gw: Gw, client: httpx.AsyncClient) -> None:
    dash = await client.get(gw.url("/hello"), headers={**OWNER, **gw.host_header()})
    p_form = await client.get(gw.url("/hello"), headers={**OWNER, **gw.host_header(form="p")})
    extra = await client.get(gw.url("/hello"), headers={**OWNER, "Host": f"{gw.port}-{gw.sid}.preview.test"})
    by_path = await client.get(gw.path_url("/hello"), headers=OWNER)
    for response in (dash, p_form, extra, by_path):
        assert (response.status_code, response.text) == (200, "hello from the sandbox")
    api_host = await client.get(gw.url("/healthz"), headers={"Host": f"localhost:{gw.server.port}"})
    assert api_host.json()["status"] == "ok"  # corral's own API: not the gateway's


async def test_paths_and_queries_pass_unchanged(gw: Gw, client: httpx.AsyncClient) -> None:
    target = "/headers/a%2Fb/c%20d;p?x=1&y=%20z&token-ish=1&tokens=2"
    by_host = await client.get(gw.url(target), headers={**OWNER, **gw.host_header()})
    by_path = await client.get(gw.path_url(target), headers=OWNER)
    assert by_host.json()["target"] == by_path.json()["target"] == target


async def test_bare_path_prefix_redirects_to_the_slash_form(gw: Gw, client: httpx.AsyncClient) -> None:
    response = await client.get(f"{gw.server.url}/preview/{gw.sid}/{gw.port}?a=1", headers=OWNER)
    assert response.status_code == 308
    assert response.headers["location"] == f"/preview/{gw.sid}/{gw.port}/?a=1"


async def test_request_headers_into_the_sandbox(gw: Gw, client: httpx.AsyncClient) -> None:
    sent = {
        **OWNER,
        **gw.host_header(),
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "dropped",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Host": "spoofed.example",
        "X-End-To-End": "kept",
        "Cookie": "app=1; corral_preview_token=secret; other=2",
    }
    seen = await client.get(gw.url("/headers"), headers=sent)
    headers = {k.lower(): v for k, v in seen.json()["headers"]}
    assert not {"x-hop", "keep-alive", "te", "x-api-key"} & set(headers)
    assert "connection" not in headers  # HTTP/1.1 keeps alive by default
    assert headers["host"] == gw.host_header()["Host"]
    # loopback is a trusted proxy for uvicorn: the client is the one it names
    assert headers["x-forwarded-for"] == "203.0.113.9"
    assert headers["x-forwarded-host"] == gw.host_header()["Host"]
    assert headers["x-forwarded-proto"] == "http" and "x-forwarded-prefix" not in headers
    assert headers["x-end-to-end"] == "kept"
    assert headers["cookie"] == "app=1; other=2"
    by_path = await client.get(gw.path_url("/headers"), headers=OWNER)
    path_headers = {k.lower(): v for k, v in by_path.json()["headers"]}
    assert path_headers["x-forwarded-prefix"] == f"/preview/{gw.sid}/{gw.port}"
    assert path_headers["x-forwarded-for"] == "127.0.0.1"


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_streaming_upload_of_200_mb_is_not_buffered(gw: Gw, client: httpx.AsyncClient) -> None:
    size, piece = 200 * 1024 * 1024, os.urandom(1024 * 1024)
    expected = hashlib.sha256()
    for _ in range(size // len(piece)):
        expected.update(piece)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // len(piece)):
            yield piece

    peak, stop = [_rss()], threading.Event()
    before = peak[0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        response = await client.post(gw.path_url("/upload"), headers=OWNER, content=body(), timeout=120)
    finally:
        stop.set()
        sampler.join()
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": size, "sha256": expected.hexdigest()}
    assert peak[0] - before < 64 * 1024 * 1024, f"RSS grew by {(peak[0] - before) >> 20} MiB"


async def test_a_whole_body_and_a_chunked_one_arrive_intact(gw: Gw, client: httpx.AsyncClient) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    whole = await client.post(gw.path_url("/upload"), headers=OWNER, content=data)
    chunked = await client.post(gw.path_url("/upload"), headers=OWNER, content=chunks())
    empty = await client.post(gw.path_url("/upload"), headers=OWNER)
    digest = hashlib.sha256(data).hexdigest()
    assert whole.json() == chunked.json() == {"bytes": len(data), "sha256": digest}
    assert empty.json()["bytes"] == 0


@pytest.mark.parametrize("via", ["fast_path", "asgi"])
async def test_an_endless_body_streams_in_bounded_memory_and_stops_with_the_client(
    gw: Gw, client: httpx.AsyncClient, via: str
) -> None:
    fast_path = gw.gateway.fast_path
    await client.get(gw.path_url("/hello"), headers=OWNER)  # a pooled connection, the grant cached
    served = fast_path.served
    headers = {**OWNER, **({"X-Forwarded-For": "127.0.0.1"} if via == "asgi" else {})}
    before, peak, received = _rss(), 0, 0
    async with client.stream("GET", gw.path_url("/endless-body"), headers=headers) as response:
        assert response.status_code == 200
        assert fast_path.served == served + (via == "fast_path")
        async for chunk in response.aiter_raw():
            received += len(chunk)
            peak = max(peak, _rss())
            if received > 150 * 1024 * 1024:
                break
    assert peak - before < 64 * 1024 * 1024, f"RSS grew by {(peak - before) >> 20} MiB"
    await eventually_async(  # the gateway closed the sandbox's side too
        lambda: sandbox_state(gw, client, "endless_body_ended"), 5, "the sandbox's side stayed open"
    )


async def test_a_client_giving_up_on_a_hung_server_frees_the_sandbox_side(
    gw: Gw, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.get(gw.path_url("/hang"), headers=OWNER, timeout=0.5)
    await eventually_async(  # the gateway noticed and closed its connection into the sandbox
        lambda: sandbox_state(gw, client, "hang_ended"), 3, "the gateway kept its connection"
    )


async def test_head_requests(gw: Gw, client: httpx.AsyncClient) -> None:
    for _ in range(3):  # the pooled connection stays usable after a body-less answer
        head = await client.head(gw.path_url("/hello"), headers=OWNER)
        assert (head.status_code, head.headers["content-length"], head.content) == (200, "22", b"")
        assert (await client.get(gw.path_url("/hello"), headers=OWNER)).text == "hello from the sandbox"


async def test_sse_events_arrive_one_by_one(gw: Gw, client: httpx.AsyncClient) -> None:
    headers = {**OWNER, **gw.host_header()}
    async with client.stream("GET", gw.url("/sse?n=3"), headers=headers) as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.aiter_lines()
        for i in (1, 2, 3):
            # the server sends event i+1 only after /sse/next: each must arrive alone
            async with asyncio.timeout(5):
                line = await anext(lines)
                while not line:
                    line = await anext(lines)
            assert line == f"data: {i}"
            if i < 3:
                assert (await client.get(gw.url("/sse/next"), headers=headers)).text == "ok"


async def test_upstream_cors_is_dropped_and_corrals_applied(gw: Gw, client: httpx.AsyncClient) -> None:
    headers = {**OWNER, **gw.host_header()}
    allowed = await client.get(gw.url("/cors"), headers={**headers, "Origin": ALLOWED_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-expose-headers" not in allowed.headers
    assert "access-control-allow-methods" not in allowed.headers
    other = await client.get(gw.url("/cors"), headers={**headers, "Origin": "http://evil.example"})
    assert other.status_code == 200 and not [h for h in other.headers if h.startswith("access-control-")]
    asked = {"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "PUT", **gw.host_header()}
    preflight = await client.options(
        gw.url("/cors"), headers={**asked, "Access-Control-Request-Headers": "x-a"}
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-methods"] == "PUT"
    assert preflight.headers["access-control-allow-headers"] == "x-a"
    refused = await client.options(gw.url("/cors"), headers={**asked, "Origin": "http://evil.example"})
    assert refused.status_code == 204 and "access-control-allow-origin" not in refused.headers
    denied = await client.get(gw.url("/cors"), headers={**gw.host_header(), "Origin": ALLOWED_ORIGIN})
    assert denied.status_code == 401  # an allowed origin can read corral's errors
    assert denied.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


async def test_cookies_and_redirects_stay_with_their_preview(gw: Gw, client: httpx.AsyncClient) -> None:
    by_host = await client.get(gw.url("/cookie"), headers={**OWNER, **gw.host_header()})
    assert by_host.headers["set-cookie"] == "a=b; HttpOnly; Path=/"
    by_path = await client.get(gw.path_url("/cookie"), headers=OWNER)
    assert by_path.headers["set-cookie"] == f"a=b; HttpOnly; Path=/preview/{gw.sid}/{gw.port}/"
    redirect = await client.get(gw.path_url("/redirect"), headers=OWNER)
    assert (redirect.status_code, redirect.headers["location"]) == (302, f"/preview/{gw.sid}/{gw.port}/hello")
    assert "date" in by_host.headers and len(by_host.headers.get_list("date")) == 1


async def test_502_when_nothing_listens(gw: Gw, client: httpx.AsyncClient) -> None:
    with refused_port() as port:
        response = await client.get(gw.path_url("/", port=port), headers=OWNER)
    assert response.status_code == 502 and "nothing is listening" in response.json()["error"]


@pytest.mark.parametrize("path", ["/die", "/garbage"])
async def test_502_when_the_server_dies_or_talks_garbage(
    gw: Gw, client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(gw.path_url(path), headers=OWNER)
    assert response.status_code == 502 and set(response.json()) == {"error"}


async def test_a_server_dying_mid_response_cuts_the_client_off(gw: Gw, client: httpx.AsyncClient) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        await client.get(gw.path_url("/die-mid"), headers=OWNER)
    assert (await client.get(gw.path_url("/hello"), headers=OWNER)).status_code == 200


async def test_endless_response_headers_are_bounded(gw: Gw, client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.get(gw.path_url("/endless-headers"), headers=OWNER)
    # Which bound trips first (bytes or count) depends on how the stream is chunked.
    assert response.status_code == 502
    assert re.search(r"response head larger than|more than \d+ response headers", response.json()["error"])
    assert time.monotonic() - started < 5


async def test_a_slow_loris_server_is_cut_off_and_others_are_served(
    gw: Gw, client: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    slow = asyncio.create_task(client.get(gw.path_url("/slow-headers"), headers=OWNER))
    await eventually_async(lambda: sandbox_state(gw, client, "slow_headers_started"), 5)
    meanwhile = time.monotonic()
    assert (await client.get(gw.path_url("/hello"), headers=OWNER)).status_code == 200
    assert time.monotonic() - meanwhile < 0.5
    response = await slow
    assert response.status_code == 502 and "response head within" in response.json()["error"]
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 2


async def test_kill_switch_answers_503_globally_and_per_org(gw: Gw, client: httpx.AsyncClient) -> None:
    switch = gw.server.core.kill_switch
    switch.engage()
    try:
        response = await client.get(gw.path_url("/hello"), headers=OWNER)
        assert response.status_code == 503 and set(response.json()) == {"error"}
    finally:
        switch.release()
    owner_org = gw.server.org_id
    switch.engage(owner_org)
    try:
        assert (await client.get(gw.path_url("/hello"), headers=OWNER)).status_code == 503
        assert (await gw.api.get(f"/sandboxes/{gw.sid}")).status_code == 200  # the API is not switched off
    finally:
        switch.release(owner_org)
    assert (await client.get(gw.path_url("/hello"), headers=OWNER)).status_code == 200


async def test_404_once_the_sandbox_is_killed(gw: Gw, client: httpx.AsyncClient) -> None:
    created = await gw.api.post("/sandboxes", json={"previewAuth": {"token": "auto"}})
    sid, token = created.json()["sandboxID"], created.json()["previewAuthToken"]
    with refused_port() as port:
        assert (await gw.api.post(f"/sandboxes/{sid}/preview", json={"port": port})).status_code == 201
        url = f"{gw.server.url}/preview/{sid}/{port}/"
        assert (await client.get(url, headers=OWNER)).status_code == 502  # known, nothing listens
        assert (await client.get(url, headers={"X-OC-Preview-Token": token})).status_code == 502
    assert (await gw.api.delete(f"/sandboxes/{sid}")).status_code == 204
    for headers in (OWNER, {"X-OC-Preview-Token": token}):
        gone = await client.get(url, headers=headers)
        assert gone.status_code == 404 and gone.json() == {"error": "sandbox or port not found"}


async def test_gateway_traffic_shows_in_metrics(gw: Gw, client: httpx.AsyncClient) -> None:
    def sample(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (await client.get(f"{gw.server.url}/metrics")).text
    ok = await client.get(gw.url("/hello"), headers={**OWNER, **gw.host_header()})
    missing = await client.get(gw.url("/hello"), headers=gw.host_header())
    assert (ok.status_code, missing.status_code) == (200, 401)
    after = (await client.get(f"{gw.server.url}/metrics")).text
    ok_200 = 'corral_gateway_requests_total{status="200"}'
    no_key_401 = 'corral_gateway_requests_total{status="401"}'
    assert sample(after, ok_200) == sample(before, ok_200) + 1
    assert sample(after, no_key_401) == sample(before, no_key_401) + 1
    out = 'corral_gateway_bytes_total{direction="out"}'
    assert sample(after, out) >= sample(before, out) + len("hello from the sandbox")


async def test_sandbox_domain_names_a_working_preview_host(gw: Gw, client: httpx.AsyncClient) -> None:
    got = await client.get(f"{gw.server.url}/api/sandboxes/{gw.sid}", headers=OWNER)
    domain = got.json()["sandboxDomain"]
    assert domain == f"localhost:{gw.server.port}"
    # what the TypeScript SDK's getPreviewDomain(port) builds
    host = f"{gw.sid}-p{gw.port}.{domain}"
    response = await client.get(gw.url("/hello"), headers={**OWNER, "Host": host})
    assert (response.status_code, response.text) == (200, "hello from the sandbox")


async def sandbox_state(gw: Gw, client: httpx.AsyncClient, key: str) -> bool:
    """Whether the sandbox's server noticed ``key`` (its ``/state``)."""
    return (await client.get(gw.path_url("/state"), headers=OWNER)).json()[key] is True
