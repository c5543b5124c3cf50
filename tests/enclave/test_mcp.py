"""The MCP server (issue 15) driven by the ``mcp`` SDK's own client over both
transports, against the real ``corral serve`` on runc of the Enclave tests: Streamable
HTTP at ``/mcp`` and ``corral mcp`` over stdio, started as a subprocess the way MCP
clients start it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp import StdioServerParameters
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from tests.enclave.conftest import Org, Server
from tests.support.process import CORRAL

pytestmark = pytest.mark.integration

TOOLS = {
    "run_code", "get_result", "get_audit", "list_sessions", "teardown_session",
    "create_sandbox", "list_sandboxes", "exec", "read_file", "write_file", "list_files",
    "preview_url", "checkpoint", "fork", "kill_sandbox", "list_templates",
}  # fmt: skip


@asynccontextmanager
async def over_http(
    server: Server, credential: str | None, header: str = "Authorization"
) -> AsyncIterator[Client]:
    """A client of ``/mcp`` sending ``credential`` as ``Authorization: Bearer`` (or as ``header``)."""
    value = f"Bearer {credential}" if header == "Authorization" else credential
    headers = {header: value} if credential else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        yield client


@asynccontextmanager
async def over_stdio(server: Server, credential: str) -> AsyncIterator[Client]:
    """``corral mcp`` started as a subprocess, as Claude Desktop's configuration starts it."""
    params = StdioServerParameters(
        command=CORRAL, args=["mcp"], env={"CORRAL_URL": server.url, "CORRAL_API_KEY": credential}
    )
    async with Client(params) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, TextContent))


def structured(result: CallToolResult) -> Any:
    assert not result.is_error, text(result)
    return result.structured_content


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    return structured(await client.call_tool(tool, arguments))


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_tools_are_listed_and_run_code_returns_the_result(
    enclave: Server, alpha: Org, transport: str
) -> None:
    connect = over_http if transport == "http" else over_stdio
    async with connect(enclave, alpha.key) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == TOOLS
        assert tools["run_code"].input_schema["required"] == ["code"]
        assert tools["run_code"].description and "enclave.result" in tools["run_code"].description

        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        python = await client.call_tool(
            "run_code",
            {"code": "print('hi from python')\nenclave.result({'answer': 6 * 7})"},
            progress_callback=on_progress,
        )
        ran = structured(python)
        assert ran["phase"] == "succeeded"
        assert ran["exitCode"] == 0 and ran["result"] == {"answer": 42}
        assert ran["stdout"] == "hi from python\n"
        assert "end: succeeded" in progress  # the session's stream, frame by frame
        node = await call(
            client, "run_code", code="console.log('hi from node'); enclave.result([1, 2])", language="node"
        )
        assert (node["phase"], node["stdout"], node["result"]) == ("succeeded", "hi from node\n", [1, 2])
        again = await call(client, "get_result", sessionId=ran["sessionId"])
        assert again["result"] == {"answer": 42}
        audit = await call(client, "get_audit", sessionId=ran["sessionId"])
        assert audit["events"][0]["type"] == "session_created"
        listed = json.dumps(await call(client, "list_sessions"))
        assert ran["sessionId"] in listed and node["sessionId"] in listed


async def test_a_sandbox_worked_in_over_http(enclave: Server, alpha: Org) -> None:
    """create -> write_file -> exec -> read_file -> list_files -> preview_url (fetched
    through the gateway) -> kill, and the file as a resource."""
    async with over_http(enclave, alpha.key) as client:
        sandbox = await call(client, "create_sandbox", envs={"GREETING": "hello"})
        sid = sandbox["sandboxID"]
        assert not [k for k in sandbox if "token" in k.lower()]
        try:
            page = "<h1>served from a sandbox</h1>"
            wrote = await client.call_tool(
                "write_file", {"sandbox_id": sid, "path": "/tmp/site/index.html", "content": page}
            )
            assert not wrote.is_error, text(wrote)
            ran = await call(
                client, "exec", sandbox_id=sid, command="cat index.html; echo $GREETING", cwd="/tmp/site"
            )
            assert ran["exitCode"] == 0 and ran["stdout"] == f"{page}hello\n"
            long = await call(client, "exec", sandbox_id=sid, command="head -c 50000 /dev/zero | tr '\\0' x")
            assert long["stdout"].endswith("[... 30000 more characters not shown]")
            assert (
                text(await client.call_tool("read_file", {"sandbox_id": sid, "path": "/tmp/site/index.html"}))
                == page
            )
            late = await client.call_tool("exec", {"sandbox_id": sid, "command": "sleep 30", "timeout": 1})
            assert late.is_error and "ran past its timeout (1 s)" in text(late)
            listed = await call(client, "list_files", sandbox_id=sid, path="/tmp/site")
            assert [e["name"] for e in listed["entries"]] == ["index.html"]
            resource = await client.read_resource(f"sandbox://{sid}/tmp/site/index.html")
            assert [getattr(c, "text", None) for c in resource.contents] == [page]

            serve = "nohup python3 -m http.server 8000 --directory /tmp/site >/dev/null 2>&1 &"
            await call(client, "exec", sandbox_id=sid, command=serve)
            preview = await call(client, "preview_url", sandbox_id=sid, port=8000)
            assert preview["port"] == 8000
            assert await _fetched(enclave, alpha, preview["url"], sid) == page
        finally:
            killed = await client.call_tool("kill_sandbox", {"sandbox_id": sid})
        assert not killed.is_error, text(killed)
        gone = await client.call_tool("exec", {"sandbox_id": sid, "command": "true"})
        assert gone.is_error and f"409: sandbox {sid} is stopped" in text(gone)


async def _fetched(server: Server, org: Org, url: str, sandbox_id: str) -> str:
    """The page at preview ``url``, asked of the server's gateway by its host name (the
    server listens on loopback; no DNS for the preview domain here), with the org's key."""
    host = urlsplit(url).netloc
    assert sandbox_id in host and "8000" in host, url
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        for _ in range(100):  # the server in the sandbox may still be starting: the gateway says 502
            answer = await http.get("/", headers={"Host": host, "X-API-Key": org.key})
            if answer.status_code != 502:
                break
        assert answer.status_code == 200, answer.text
        return answer.text


async def test_refusals_are_tool_errors_and_the_session_carries_on(
    enclave: Server, alpha: Org, beta: Org
) -> None:
    theirs = beta.http().post("/api/sandboxes", json={}).json()["sandboxID"]
    try:
        async with over_http(enclave, alpha.key_of("viewer")) as viewer:
            refused = await viewer.call_tool("run_code", {"code": "print(1)"})
            assert refused.is_error and "403" in text(refused)
            assert isinstance(await call(viewer, "list_sandboxes"), dict)  # reading is a viewer's
        async with over_http(enclave, alpha.key) as client:
            other = await client.call_tool("read_file", {"sandbox_id": theirs, "path": "/etc/hostname"})
            assert other.is_error and "404" in text(other) and "not found" in text(other)
            bad = await client.call_tool("run_code", {"code": "print(1)", "language": "cobol"})
            assert bad.is_error and "language" in text(bad)
            missing = await client.call_tool("exec", {"sandbox_id": theirs})
            assert missing.is_error and "command" in text(missing)
            limits = await client.call_tool("run_code", {"code": "1", "limits": {"memoryMiB": -5}})
            assert limits.is_error and "memoryMiB" in text(limits)
            ok = await call(client, "list_sandboxes")  # the same session carries on
            assert theirs not in json.dumps(ok)
    finally:
        beta.http().delete(f"/api/sandboxes/{theirs}")


async def test_mcp_without_a_credential_is_401_and_a_bad_one_a_tool_error(enclave: Server) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(f"{enclave.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
    async with over_http(enclave, "ek_nobody_" + "x" * 48) as client:
        refused = await client.call_tool("list_sandboxes", {})
        assert refused.is_error and "401: invalid API key" in text(refused), text(refused)


async def test_mcp_takes_a_user_jwt_and_the_x_api_key_header(enclave: Server, alpha: Org, beta: Org) -> None:
    """A JWT is judged as on the API: the org it names is the caller's."""
    theirs = beta.http().post("/api/sandboxes", json={}).json()["sandboxID"]
    try:
        async with over_http(enclave, enclave.token(beta.key)) as client:
            assert theirs in json.dumps(await call(client, "list_sandboxes"))
        async with over_http(enclave, alpha.key, header="X-API-Key") as client:
            assert theirs not in json.dumps(await call(client, "list_sandboxes"))
            other = await client.call_tool("kill_sandbox", {"sandbox_id": theirs})
            assert other.is_error and "404" in text(other)
    finally:
        beta.http().delete(f"/api/sandboxes/{theirs}")
