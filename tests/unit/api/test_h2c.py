"""HTTP/2 with prior knowledge (h2c) through the front, on a real server: httpx as an
HTTP/2-only client, beside HTTP/1.1 on the same port."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from corral.api.server import config
from corral.settings import Settings
from tests.support.server_thread import served
from tests.support.sockets import listening


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, object]:
        body = await request.body()
        return {"size": len(body), "version": request.scope["http_version"], "q": request.url.query}

    @app.get("/stream")
    async def stream(n: int) -> StreamingResponse:
        async def chunks() -> Iterator[bytes]:  # type: ignore[misc]
            for i in range(n):
                yield bytes([i % 256]) * 65536

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    return app


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(data_dir=tmp_path, runtime="process")  # type: ignore[call-arg]
    with served(config(settings, echo_app()), listening(), "h2c-server") as base:
        yield base


def test_h2c_and_http1_on_one_port(url: str) -> None:
    payload = os.urandom(3 * 1024 * 1024)  # past every flow-control window
    with httpx.Client(http1=False, http2=True) as h2:
        answer = h2.post(f"{url}/echo?x=1", content=payload)
        assert answer.http_version == "HTTP/2"
        assert answer.json() == {"size": len(payload), "version": "2", "q": "x=1"}
        streamed = h2.get(f"{url}/stream", params={"n": 40})  # 2.5 MiB down
        assert streamed.http_version == "HTTP/2" and len(streamed.content) == 40 * 65536
        assert streamed.content[65536 * 39] == 39
    plain = httpx.post(f"{url}/echo", content=b"abc")
    assert plain.http_version == "HTTP/1.1" and plain.json()["version"] == "1.1"


def test_a_broken_preface_is_refused_not_served(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        # a whole frame (9 bytes of header, 4 of payload) that is not the SETTINGS one the
        # preface must be followed by: refused at once, not left to the idle timeout
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x04\x09garbage!!")
        raw.settimeout(5)
        received = b""
        while chunk := raw.recv(4096):
            received += chunk
    assert b"HTTP/1.1 200" not in received and received  # a GOAWAY, then closed
