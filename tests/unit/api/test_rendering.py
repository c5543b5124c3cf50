"""What every surface's envelope shares: one renderer for every error of an app, the
first problem of a request that failed validation, and an envelope on a WebSocket."""

from __future__ import annotations

import importlib
import inspect
import json

import httpx
import pytest
from fastapi import FastAPI, WebSocket
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, field_validator
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from corral.api import rendering
from corral.errors import Busy, CorralError, LimitExceeded, NotFound


class Limits(BaseModel):
    pids: int


class Body(BaseModel):
    name: str
    limits: Limits | None = None

    @field_validator("name")
    @classmethod
    def plain(cls, value: str) -> str:
        if "/" in value:
            raise ValueError("must not contain /")
        return value


def app_rendering_as_seen() -> tuple[FastAPI, list[Exception]]:
    """An app whose renderer answers every error with its type and, for a request that
    failed validation, what ``first_invalid`` made of it."""
    seen: list[Exception] = []
    app = FastAPI()

    async def render(conn: HTTPConnection, exc: Exception) -> Response | None:
        seen.append(exc)
        body: dict[str, object] = {"type": type(exc).__name__}
        if isinstance(exc, RequestValidationError | WebSocketRequestValidationError):
            invalid = rendering.first_invalid(exc)
            body |= {"message": invalid.message, "where": invalid.where, "field": invalid.field}
        status = 404 if isinstance(exc, NotFound) else 400 if "message" in body else 500
        response = JSONResponse(body, status_code=status)
        return await rendering.send(conn, response, 4000 + status, json.dumps(body))

    rendering.install(app, render)

    @app.post("/things")
    async def make(body: Body) -> dict[str, str]:
        return {"name": body.name}

    @app.get("/things/{name}")
    async def find(name: str) -> None:
        raise NotFound(f"thing {name} not found")

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a secret detail")

    @app.websocket("/ws")
    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        raise NotFound("nothing here")

    return app, seen


async def post(app: FastAPI, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.post("/things", content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("body", "message", "where", "field"),
    [
        (b"{not json", rendering.NOT_JSON, None, None),
        (b"[1, 2]", rendering.NOT_OBJECT, None, None),
        (b"{}", "name: field required", "name", "name"),
        (b'{"name": "a/b"}', "name: must not contain /", "name", "name"),  # no "Value error, "
        (b'{"name": "a", "limits": {"pids": "x"}}', None, "limits.pids", "limits"),
    ],
)
async def test_the_first_problem_of_a_request_names_its_field(
    body: bytes, message: str | None, where: str | None, field: str | None
) -> None:
    app, _ = app_rendering_as_seen()
    answer = await post(app, body)
    assert answer.status_code == 400, answer.text
    found = answer.json()
    assert found["type"] == "RequestValidationError"
    assert (found["where"], found["field"]) == (where, field)
    if message is not None:
        assert found["message"] == message
    else:
        assert found["message"].startswith("limits.pids: input should be a valid integer")


async def test_every_error_of_the_app_goes_to_the_renderer() -> None:
    app, seen = app_rendering_as_seen()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        missing = await c.get("/things/x")
        assert missing.status_code == 404 and missing.json() == {"type": "NotFound"}
        unrouted = await c.get("/nowhere")
        assert unrouted.status_code == 500 and unrouted.json() == {"type": "HTTPException"}
        broken = await c.get("/broken")
        assert broken.status_code == 500 and "secret" not in broken.text
    assert [type(e).__name__ for e in seen] == ["NotFound", "HTTPException", "RuntimeError"]


def test_an_accepted_websocket_is_closed_with_the_code_and_reason_given() -> None:
    app, _ = app_rendering_as_seen()
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 4404
    assert json.loads(closed.value.reason) == {"type": "NotFound"}


def test_a_close_reason_is_cut_to_123_bytes_of_whole_characters() -> None:
    app = FastAPI()

    async def render(conn: HTTPConnection, exc: Exception) -> Response | None:
        return await rendering.send(conn, JSONResponse({}, status_code=500), 1011, "é" * 100)

    rendering.install(app, render)

    @app.websocket("/ws")
    async def socket(ws: WebSocket) -> None:
        await ws.accept()
        raise CorralError("a bug")

    with (
        TestClient(app) as client,
        client.websocket_connect("/ws") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 1011 and closed.value.reason == "é" * 61


@pytest.mark.parametrize("surface", ["copass", "e2b", "enclave", "opencomputer", "runs", "xgen"])
async def test_every_surfaces_429_for_a_full_queue_says_when_to_retry(surface: str) -> None:
    render = importlib.import_module(f"corral.api.{surface}.errors").render
    request = Request({"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""})
    full = Busy("creating sandboxes: the queue is full (max_queued_creates)", retry_after_s=7)
    answer = render(request, full)
    answer = await answer if inspect.isawaitable(answer) else answer
    assert answer.status_code == 429 and answer.headers["Retry-After"] == "7"
    assert "max_queued_creates" in answer.body.decode()
    other = render(request, LimitExceeded("too many requests"))
    other = await other if inspect.isawaitable(other) else other
    assert other.status_code == 429 and "Retry-After" not in other.headers
