"""Bare proxies on uvloop, as references for the gateway benchmark: the least a proxy
written in Python does, as nginx shows what one written in C does on this machine.

- ``Relay(routes, address)``: accept, connect, copy bytes both ways (no HTTP, no
  routing, no auth);
- ``Relay(routes, address, http=True)``: the same, but each request and response is
  parsed with httptools and its head written again (hop-by-hop headers dropped), one
  upstream connection per client connection: the least an HTTP-aware proxy does, with
  none of the gateway's routing, auth, CORS, bounds, timeouts or metrics.

Either runs ``python relay.py [--http] ADDRESS LISTEN:UPSTREAM ...`` in a subprocess for
the duration of a ``with`` block: it listens on loopback and connects to the upstream
ports at ``address`` (loopback, or a sandbox the benchmark made).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Self

import httptools


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if not self.client.is_closing():  # the load generator may have gone
            self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, address: str, upstream_port: int, upstream_class: type[_Upstream]) -> None:
        self.address = address
        self.upstream_port = upstream_port
        self.upstream_class = upstream_class
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: self.upstream_class(self.transport),  # type: ignore[arg-type]
            self.address,
            self.upstream_port,
        )
        self.upstream = upstream
        for data in self.early:
            upstream.write(data)

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        elif not self.upstream.is_closing():
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


HOP = frozenset({b"keep-alive", b"date"})  # framing and Connection pass


class _Head:
    """The header fields of the message being parsed, hop-by-hop ones left out."""

    head: list[bytes]

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in HOP:
            self.head.append(b"%b: %b\r\n" % (name, value))


class _HttpUpstream(_Head, _Upstream):
    """A response parsed and its head written again (Content-Length framing only: the
    benchmark's servers all send it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_headers_complete(self) -> None:
        version, status = self.parser.get_http_version().encode(), self.parser.get_status_code()
        super().data_received(b"HTTP/%b %d OK\r\n%b\r\n" % (version, status, b"".join(self.head)))
        self.head = []

    def on_body(self, body: bytes) -> None:
        super().data_received(body)


class _HttpClient(_Head, _Client):
    """A request parsed and its head written again."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.parser = httptools.HttpRequestParser(self)
        self.head = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.head = [b"%b %b HTTP/1.1\r\n" % (self.parser.get_method(), url)]

    def on_headers_complete(self) -> None:
        super().data_received(b"".join(self.head) + b"\r\n")

    def on_body(self, body: bytes) -> None:
        super().data_received(body)


async def _serve(address: str, routes: dict[int, int], http: bool) -> None:
    loop = asyncio.get_running_loop()
    client, upstream_class = (_HttpClient, _HttpUpstream) if http else (_Client, _Upstream)
    for listen, upstream in routes.items():
        await loop.create_server(
            lambda up=upstream: client(address, up, upstream_class),  # type: ignore[misc]
            "127.0.0.1",
            listen,
        )
    await asyncio.Event().wait()


class Relay:
    def __init__(self, routes: dict[int, int], address: str = "127.0.0.1", http: bool = False) -> None:
        self.routes = routes
        self.address = address
        self.http = http
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        argv = [sys.executable, __file__, *(["--http"] if self.http else []), self.address]
        argv += [f"{a}:{b}" for a, b in self.routes.items()]
        self.proc = subprocess.Popen(argv)
        deadline = time.monotonic() + 10
        for listen in self.routes:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", listen), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise RuntimeError("the relay did not start") from None
                    time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


if __name__ == "__main__":
    import uvloop

    http = sys.argv[1] == "--http"
    args = sys.argv[2:] if http else sys.argv[1:]
    uvloop.run(_serve(args[0], {int(a): int(b) for a, b in (arg.split(":") for arg in args[1:])}, http))
