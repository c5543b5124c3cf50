"""A bare TCP byte relay on uvloop, as a reference for the gateway benchmark: the least
any Python proxy does (accept, connect, copy bytes both ways: no HTTP parsing, no
routing, no auth). Its numbers are the ceiling of a proxy written in Python on this
machine, as nginx's are of one written in C.

``Relay(routes, address)`` runs ``python relay.py ADDRESS LISTEN:UPSTREAM ...`` in a
subprocess for the duration of a ``with`` block: it listens on loopback and connects to
the upstream ports at ``address`` (loopback, or a sandbox the benchmark made).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Self


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        if not self.client.is_closing():  # the load generator may have gone
            self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, address: str, upstream_port: int) -> None:
        self.address = address
        self.upstream_port = upstream_port
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        upstream, _ = await loop.create_connection(
            lambda: _Upstream(self.transport),  # type: ignore[arg-type]
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


async def _serve(address: str, routes: dict[int, int]) -> None:
    loop = asyncio.get_running_loop()
    for listen, upstream in routes.items():
        await loop.create_server(lambda up=upstream: _Client(address, up), "127.0.0.1", listen)  # type: ignore[misc]
    await asyncio.Event().wait()


class Relay:
    def __init__(self, routes: dict[int, int], address: str = "127.0.0.1") -> None:
        self.routes = routes
        self.address = address
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        argv = [sys.executable, __file__, self.address, *(f"{a}:{b}" for a, b in self.routes.items())]
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

    uvloop.run(_serve(sys.argv[1], {int(a): int(b) for a, b in (arg.split(":") for arg in sys.argv[2:])}))
