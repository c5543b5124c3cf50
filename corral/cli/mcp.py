"""``corral mcp``: the MCP server over stdio, for MCP clients that start it themselves
(Claude Desktop, Claude Code, Cursor...).

A thin client of a corral server's HTTP API, like the rest of the CLI (``--url`` /
``CORRAL_URL``, ``--api-key`` / ``CORRAL_API_KEY``, else ``<data dir>/admin-key``),
sending the credential as ``Authorization: Bearer`` (an API key or a JWT). stdout
carries only JSON-RPC; logs go to stderr. The tools are ``corral.api.mcp.tools``'; the
MCP SDK is imported only here, so the other commands do not pay for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx

from corral.cli.client import KeyOption, UrlOption, default_api_key
from corral.cli.console import CliError, reported


def mcp(url: UrlOption = "http://127.0.0.1:8080", api_key: KeyOption = None) -> None:
    """Serve corral's MCP tools over stdio (for an MCP client to start)."""
    with reported():
        key = api_key if api_key is not None else default_api_key()
        if not key:
            raise CliError("no API key: set CORRAL_API_KEY (or --api-key)")
    from corral.api.mcp.api import TIMEOUT, Api
    from corral.api.mcp.tools import build

    base = url.rstrip("/").removesuffix("/api")
    client = httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)

    @asynccontextmanager
    async def connect(ctx: object) -> AsyncIterator[Api]:
        yield Api(client)  # every call is the one configured caller's

    async def serve() -> None:
        async with client:
            await build(connect).run_stdio_async()

    anyio.run(serve)
