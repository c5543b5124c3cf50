"""The binding forwarder on loopback: real HTTP in (httpx, from 127.0.0.1 and 127.0.0.2
as two "sandboxes"), a real upstream out (tests/support/upstream.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from corral.domain.bindings import Binding, binding
from corral.network.forwarder import Forwarder, ForwarderConfig
from tests.support.conditions import eventually_async
from tests.support.upstream import Upstream, self_signed

SECRET = "s3cret-value-never-in-a-sandbox"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(header="X-Api-Key", secret=SECRET).start()
    yield server
    server.stop()


def bound(upstream: Upstream, name: str = "model", path: str = "/base") -> Binding:
    return binding("org-1", name, upstream.url + path, "X-Api-Key", SECRET, datetime.now(UTC))


class Calls:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, object]]] = []

    async def __call__(self, sandbox_id: str, org_id: str, call: dict[str, object]) -> None:
        self.calls.append((sandbox_id, org_id, call))


@pytest.fixture
async def forwarder() -> AsyncIterator[Forwarder]:
    server = Forwarder(Calls(), ForwarderConfig(max_body=1024, calls_per_sandbox=1, connect_timeout=2))
    await server.start("127.0.0.1")
    yield server
    await server.close()


def client(source: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=source), timeout=30)


def calls(forwarder: Forwarder) -> list[tuple[str, str, dict[str, object]]]:
    assert isinstance(forwarder.on_call, Calls)
    return forwarder.on_call.calls


async def test_a_call_reaches_the_upstream_with_the_secret_added(
    forwarder: Forwarder, upstream: Upstream
) -> None:
    urls = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])
    url = urls["model"]
    assert url.startswith(f"http://127.0.0.1:{forwarder.port}/") and SECRET not in url
    async with client() as http:
        answer = await http.post(f"{url}/v1/chat?x=1", content=b"hello", headers={"X-Api-Key": "forged"})
    assert answer.status_code == 200
    assert answer.json() == {
        "method": "POST",
        "path": "/base/v1/chat",
        "query": "x=1",
        "length": 5,
        "authorized": True,
    }
    seen = upstream.seen[-1]
    assert seen.headers["X-Api-Key"] == SECRET and seen.body == b"hello"
    assert seen.headers["Host"] == upstream.url.removeprefix("http://")
    assert url.rsplit("/", 2)[1] not in seen.path  # the token is not sent upstream
    assert SECRET not in answer.text and SECRET not in str(answer.headers)
    [(sandbox, org, call)] = calls(forwarder)
    assert (sandbox, org) == ("sb-aaaaaaaaaaaa", "org-1")
    assert {k: call[k] for k in ("binding", "method", "path", "status")} == {
        "binding": "model",
        "method": "POST",
        "path": "/v1/chat",
        "status": 200,
    }
    assert SECRET not in repr(calls(forwarder))


async def test_a_streamed_answer_is_passed_on_as_it_arrives(forwarder: Forwarder, upstream: Upstream) -> None:
    """The upstream sends its second chunk only after /release: reading the first one
    before releasing proves nothing waited for the end."""
    url = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])["model"]
    forwarder.config = ForwarderConfig(calls_per_sandbox=2)
    async with client() as http, http.stream("GET", f"{url}/stream") as answer:
        assert answer.status_code == 200
        lines = answer.aiter_lines()
        assert await asyncio.wait_for(anext(lines), 10) == "first"
        assert (await http.get(f"{url}/release")).status_code == 200
        assert await asyncio.wait_for(anext(lines), 10) == "second"


async def test_only_the_granted_sandbox_may_call(forwarder: Forwarder, upstream: Upstream) -> None:
    mine = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])["model"]
    theirs = forwarder.grant("sb-bbbbbbbbbbbb", "127.0.0.2", [bound(upstream, "other")])["other"]
    token = mine.rsplit("/", 2)[1]
    async with client("127.0.0.1") as http:
        assert (await http.get(f"{theirs}/x")).status_code == 403  # another sandbox's token
        assert (await http.get(mine.replace("/model", "/other") + "/x")).status_code == 404  # not opened
        assert (await http.get(mine.replace(token, "x" * len(token)) + "/x")).status_code == 404
    async with client("127.0.0.2") as http:
        assert (await http.get(f"{mine}/x")).status_code == 403
        assert (await http.get(f"{theirs}/x")).status_code == 200
    forwarder.revoke("sb-aaaaaaaaaaaa")
    forwarder.revoke("sb-aaaaaaaaaaaa")  # idempotent
    async with client("127.0.0.1") as http:
        assert (await http.get(f"{mine}/x")).status_code == 404
    assert len(upstream.seen) == 1  # only the one allowed call went out
    statuses = [(sandbox, call["status"]) for sandbox, _, call in calls(forwarder)]
    assert ("sb-aaaaaaaaaaaa", 404) in statuses and ("sb-bbbbbbbbbbbb", 200) in statuses


async def test_bounds(forwarder: Forwarder, upstream: Upstream) -> None:
    url = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])["model"]
    async with client() as http:
        assert (await http.post(f"{url}/x", content=b"x" * 2048)).status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"y" * 512

        assert (await http.post(f"{url}/x", content=chunks())).status_code == 413
        path = url.split(str(forwarder.port), 1)[1]
        for dots in ("..", "%2e%2E", "."):
            head = await raw(forwarder.port, f"GET {path}/a/{dots}/b HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert head.startswith(b"HTTP/1.1 400")
        async with http.stream("GET", f"{url}/stream") as held:  # the one call at once
            assert held.status_code == 200
            assert (await http.get(f"{url}/x")).status_code == 429
            upstream.release.set()
        # the stream's call ends on the forwarder's side a little after ours: its record
        # comes once its slot is free again
        await eventually_async(lambda: any(c[2].get("path") == "/stream" for c in calls(forwarder)), 10)
        assert (await http.get(f"{url}/status/503")).status_code == 503
    assert all(seen.path != "/base/b" for seen in upstream.seen)


async def test_an_upstream_that_cannot_be_reached_is_a_502(forwarder: Forwarder, upstream: Upstream) -> None:
    dead = binding("org-1", "dead", "http://127.0.0.1:9", "X-Api-Key", SECRET, datetime.now(UTC))
    url = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [dead])["dead"]
    async with client() as http:
        answer = await http.get(f"{url}/x")
    assert answer.status_code == 502 and SECRET not in answer.text
    assert calls(forwarder)[-1][2]["status"] == 502


async def raw(port: int, request: bytes) -> bytes:
    """What the forwarder first answers to ``request`` sent as is (no client's URL
    normalisation in between)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(1024), 10)
    finally:
        writer.close()


async def test_malformed_requests_get_a_400(forwarder: Forwarder) -> None:
    assert (await raw(forwarder.port, b"NOT HTTP AT ALL\r\n\r\n")).startswith(b"HTTP/1.1 400")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await raw(forwarder.port, huge)).startswith(b"HTTP/1.1 431")


async def test_an_https_upstream_is_checked_against_the_trusted_cas(tmp_path: Path) -> None:
    certificate = self_signed(tmp_path)
    upstream = Upstream(header="X-Api-Key", secret=SECRET, tls=certificate).start()
    trusting = Forwarder(config=ForwarderConfig(ca_file=str(certificate[0])))
    default = Forwarder()  # httpx's bundle: the self-signed certificate is not in it
    try:
        for server in (trusting, default):
            await server.start("127.0.0.1")
        async with client() as http:
            url = trusting.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])["model"]
            answer = await http.get(f"{url}/over/tls")
            assert answer.status_code == 200 and answer.json()["authorized"] is True
            url = default.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])["model"]
            assert (await http.get(f"{url}/over/tls")).status_code == 502
        assert [seen.path for seen in upstream.seen] == ["/base/over/tls"]  # no secret sent unverified
    finally:
        for server in (trusting, default):
            await server.close()
        upstream.stop()


async def test_a_slow_head_and_idle_addresses_are_cut(upstream: Upstream) -> None:
    server = Forwarder(config=ForwarderConfig(idle_timeout=0.5))
    await server.start("127.0.0.1")
    try:
        server.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [bound(upstream)])
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        head = b"GET /x HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 40 + b"\r\n\r\n"
        sent = 0
        for byte in head:  # a byte every 50 ms: the head would take ~4 s
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            sent += 1
            await asyncio.sleep(0.05)
        assert await asyncio.wait_for(reader.read(), 5) == b"" and sent < len(head)
        writer.close()

        # an address without a grant holds at most 4 connections; the 5th is closed at once
        held = [
            await asyncio.open_connection("127.0.0.1", server.port, local_addr=("127.0.0.2", 0))
            for _ in range(5)
        ]
        assert await asyncio.wait_for(held[4][0].read(), 5) == b""
        assert not held[0][0].at_eof()
        for _, each in held:
            each.close()
    finally:
        await server.close()


async def test_a_metered_binding_reports_the_tokens_of_a_streamed_answer(forwarder: Forwarder) -> None:
    from tests.support.fake_anthropic import FakeMessagesApi, Text, Turn

    fake = FakeMessagesApi(key=SECRET, script=[Turn([Text("streamed")])]).start()
    try:
        model = Binding("org-1", "model-api", fake.url, "x-api-key", SECRET, datetime.now(UTC), metered=True)
        url = forwarder.grant("sb-aaaaaaaaaaaa", "127.0.0.1", [model])["model-api"]
        body = {
            "model": "claude-x",
            "max_tokens": 9,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        async with client() as http, http.stream("POST", f"{url}/v1/messages", json=body) as answer:
            events = [line async for line in answer.aiter_lines() if line.startswith("data:")]
        assert answer.status_code == 200 and '"text_delta"' in "".join(events)
        assert fake.received[0].headers["x-api-key"] == SECRET
        [(_, _, call)] = calls(forwarder)
        assert (
            call["model"] == "claude-x" and call["output_tokens"] == 7 and int(str(call["input_tokens"])) > 0
        )
    finally:
        fake.stop()
