"""The MCP surface in process (corral.api.mcp): the SDK's own client on ``/mcp`` of the
app over the process runtime, and ``Api``'s reading of corral's error envelopes. The
same tools on runc, over both transports: tests/enclave/test_mcp.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent

from corral.api.mcp.api import Api
from corral.api.mcp.tools import MAX_TEXT, bounded, build
from tests.support.app import KEY
from tests.unit.api.harness import new_key, serving


def text(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


@asynccontextmanager
async def mcp_client(app: FastAPI, key: str) -> AsyncIterator[Client]:
    transport = httpx2.ASGITransport(app=app)
    async with (
        httpx2.AsyncClient(transport=transport, headers={"X-API-Key": key}, timeout=60) as http,
        Client(streamable_http_client("http://corral.test/mcp", http_client=http)) as client,
    ):
        yield client


async def test_the_tools_work_in_a_sandbox_and_refusals_are_tool_errors(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, http):
        assert (await http.post("/mcp", json={}, headers={"X-API-Key": ""})).status_code == 401
        async with mcp_client(app, KEY) as client:
            created = await client.call_tool("create_sandbox", {})
            assert not created.is_error, text(created)
            sid = created.structured_content["sandboxID"]
            assert created.structured_content and "previewAuthToken" not in created.structured_content
            wrote = await client.call_tool(
                "write_file", {"sandbox_id": sid, "path": "/tmp/a.txt", "content": "é" * 3}
            )
            assert text(wrote) == "wrote 6 bytes to /tmp/a.txt"
            read = await client.call_tool("read_file", {"sandbox_id": sid, "path": "/tmp/a.txt"})
            assert text(read) == "ééé"
            ran = await client.call_tool("exec", {"sandbox_id": sid, "command": "echo $((6*7)) >&2; exit 3"})
            assert ran.structured_content == {"exitCode": 3, "stdout": "", "stderr": "42\n"}
            missing = await client.call_tool("read_file", {"sandbox_id": sid, "path": "/tmp/none"})
            assert missing.is_error and "404" in text(missing)
            unknown = await client.call_tool("kill_sandbox", {"sandbox_id": "sb-nothere"})
            assert unknown.is_error and "404" in text(unknown)
            typed = await client.call_tool("preview_url", {"sandbox_id": sid, "port": "eighty"})
            assert typed.is_error and "port" in text(typed)
            assert not (await client.call_tool("kill_sandbox", {"sandbox_id": sid})).is_error
        async with mcp_client(app, await new_key(app, "viewer")) as viewer:
            refused = await viewer.call_tool("create_sandbox", {})
            assert refused.is_error and text(refused).startswith("Error executing tool create_sandbox: 403")


def answering(status: int, body: Any) -> Api:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return Api(httpx.AsyncClient(transport=transport, base_url="http://corral.test"))


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        (404, {"error": "sandbox sb-x not found"}, "404: sandbox sb-x not found"),
        (
            400,
            {
                "statusCode": 400,
                "error": "Bad Request",
                "message": "must be positive",
                "field": "limits.pids",
            },
            "400: must be positive (field: limits.pids)",
        ),
        (422, {"detail": "bad"}, "422: bad"),
    ],
)
async def test_an_error_status_is_a_tool_error_with_corral_s_message(
    status: int, body: Any, said: str
) -> None:
    with pytest.raises(ToolError) as raised:
        await answering(status, body).call("GET", "/x")
    assert str(raised.value) == said


async def test_an_unreachable_server_is_a_tool_error_saying_so() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = Api(httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://corral.test:1"))
    with pytest.raises(ToolError, match=r"^cannot reach corral at http://corral.test:1: connection refused"):
        await api.call("GET", "/api/sandboxes")


def test_long_text_is_cut_and_says_so() -> None:
    assert bounded("abc") == "abc"
    assert bounded("x" * (MAX_TEXT + 5)) == "x" * MAX_TEXT + "\n[... 5 more characters not shown]"


def test_building_the_server_leaves_the_process_logging_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's server configures the root logger on construction when none is set;
    an app created by a test, a bench or an embedding program must not get Rich
    handlers at INFO from it."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", logging.WARNING)
    build(lambda *_a, **_k: None)  # type: ignore[arg-type]
    assert root.handlers == []
    assert root.level == logging.WARNING
