"""The HTTP server's connections (``corral.api.front``): limits on clients (huge or
endless request heads, too many headers, slow lorises, idle connections, bytes that are
not HTTP), and their coalesced writes (``corral.api.behind``). Raw sockets, so nothing
on the client side hides what the server does."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from corral.api.behind import CoalescingTransport
from tests.unit.gateway.conftest import Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _exchange(server: Server, data: bytes, wait: float = 5) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            return await reader.read()  # until the server closes
    finally:
        writer.close()


async def test_a_request_head_too_large_is_431(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n"
    answer = await _exchange(server, head)
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_an_endless_header_value_is_cut_off(server: Server) -> None:
    """The server answers 431 and closes; the client, still writing, may see the reset
    before the answer. Either way it is cut off long before 64 MiB (what it manages to
    write meanwhile is what the kernel's socket buffers hold, a few MiB)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
    answer = asyncio.create_task(reader.read(100))
    sent, reset = 0, False
    try:
        async with asyncio.timeout(5):
            while sent < 64 * 1024 * 1024 and not answer.done():
                writer.write(b"a" * 16384)
                await writer.drain()
                sent += 16384
    except ConnectionError:
        reset = True
    try:
        first = await asyncio.wait_for(answer, 5)  # the answer, or b"" once closed
    except ConnectionError:
        first, reset = b"", True
    writer.close()
    assert first.startswith(b"HTTP/1.1 431 ") or first == b"" or reset, first
    assert sent < 32 * 1024 * 1024, f"the server took {sent} bytes of one header"


async def test_too_many_headers_is_431(server: Server) -> None:
    head = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n"
    )
    assert (await _exchange(server, head)).startswith(b"HTTP/1.1 431 ")


async def test_a_slow_loris_is_closed_with_408(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    answer = b""
    async with asyncio.timeout(6):
        while not answer:
            try:
                answer = await asyncio.wait_for(reader.read(1000), 0.3)
            except TimeoutError:
                writer.write(b"X-Drip: 1\r\n")  # one header line every 0.3 s, forever
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert 1.5 < time.monotonic() - started < 4  # http_head_timeout_s is 2 s


async def test_a_silent_connection_is_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    async with asyncio.timeout(8):
        assert await reader.read() == b""
    writer.close()
    assert 2.5 < time.monotonic() - started < 5  # http_keep_alive_s is 3 s


async def test_bytes_that_are_not_http_are_400(server: Server) -> None:
    answer = await _exchange(server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not a request\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ") and b"connection: close" in answer


async def test_normal_requests_still_work(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/healthz", headers={f"X-{i}": "v" * 100 for i in range(50)})
        assert response.status_code == 200


class _FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_writes_of_one_loop_turn_leave_as_one() -> None:
    fake = _FakeTransport()
    transport = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert fake.writes == []
    await asyncio.sleep(0)
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert fake.writes[-1] == b"next"  # a later turn is not held back
    transport.write(b"pending")
    transport.send(b" and sent now")  # after what was pending, without waiting for the turn's end
    assert fake.writes[-1] == b"pending and sent now"
    transport.send(b"alone")
    assert fake.writes[-1] == b"alone"
    transport.write(b"last words")
    transport.close()
    assert fake.writes[-1] == b"last words" and fake.closed
    assert transport.get_extra_info("peername") == "info:peername"
