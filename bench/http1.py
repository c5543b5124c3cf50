"""A lean HTTP/1.1 JSON client for benchmarks whose client shares the machine with the
server under test.

On a 2-core machine a burst is CPU-bound, and the client's CPU is charged to the system
it drives: httpx spends ~6 ms of CPU a request in a 100-wide burst (its connection
pool, anyio and h11 layers), more than the raw-runc side's own client spends a
container. This client does one thing: a JSON request on a kept-alive connection from
a small pool, the answer read by ``Content-Length`` (or chunks), so what a burst
measures is the server. Plain asyncio streams; no TLS, no redirects, no HTTP/2.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

IDLE_REUSE_S = 2.0  # the server's keep-alive timeout is 5 s


@dataclass
class Answer:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Http1Client:
    """``post``/``get``/``delete`` with a JSON body against ``base_url``; ``headers`` go
    with every request. Connections are reused; at most ``max_connections`` at once."""

    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int = 256) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"an http:// URL with a host, not {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._headers = {"Host": f"{self._host}:{self._port}", "Connection": "keep-alive", **headers}
        # (reader, writer, idle since): reused only while younger than IDLE_REUSE_S, so
        # never one the server is closing for being idle (its keep-alive timeout)
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        data = b"" if body is None else json.dumps(body).encode()
        fields = "".join(f"{k}: {v}\r\n" for k, v in {**self._headers, **(headers or {})}.items())
        head = (
            f"{method} {path} HTTP/1.1\r\n{fields}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        ).encode()
        async with self._slots:
            reader, writer = self._reusable() or await self._connect()
            try:
                writer.write(head + data)
                answer, keep = await _read_answer(reader)
            except BaseException:
                writer.close()
                raise
            if keep:
                self._idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return answer

    async def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("POST", path, json, headers)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("GET", path, None, headers)

    async def delete(self, path: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("DELETE", path, None, headers)

    async def aclose(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()

    def _reusable(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < IDLE_REUSE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port, limit=1 << 20)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[Answer, bool]:
    """The status and body of one answer, and whether its connection may be reused."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                await _skip_trailers(reader, chunk)
                break
            body += chunk[:-2]
        payload = bytes(body)
    else:
        payload = await reader.readexactly(int(fields.get("content-length", "0")))
    keep = version == "HTTP/1.1" and fields.get("connection", "").lower() != "close"
    return Answer(int(status), payload), keep


async def _skip_trailers(reader: asyncio.StreamReader, last: bytes) -> None:
    """After the zero-size chunk: ``last`` is its CRLF, or the first trailer's start."""
    if last == b"\r\n":
        return
    await reader.readuntil(b"\r\n\r\n")
