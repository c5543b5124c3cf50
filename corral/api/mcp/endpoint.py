"""``/mcp`` of ``corral serve``: the MCP tools over Streamable HTTP (stateless: every
POST stands alone, so every call carries, and is judged by, its own credential).

A request without a credential (``X-API-Key`` or ``Authorization: Bearer``: an API key
or a JWT) is refused with a 401 before the MCP SDK sees it. A tool calls the app in
process (httpx over ASGI) with the request's credential headers (and X-Client-Id) and
client address, so the caller's org, role and scopes apply as on the HTTP API, and a bad
credential is refused there (a tool error with the API's message). httpx's ASGI
transport reads an answer whole, so run_code's progress (its session's stream) arrives
all at its end here; over stdio it arrives as the program runs. The SDK's session manager runs while
``running()`` is entered: the app's lifespan enters it (each time the app starts).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from mcp.server.mcpserver import Context
from mcp.server.transport_security import TransportSecuritySettings
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api import credentials
from corral.api.mcp.api import CREDENTIAL_HEADERS, TIMEOUT, Api
from corral.api.mcp.tools import build
from corral.errors import CorralError

PATH = "/mcp"
FORWARDED = (*CREDENTIAL_HEADERS, "x-client-id")
"""The request headers a tool's calls carry on (X-Client-Id: into the audit trail)."""
INTERNAL_BASE_URL = "http://127.0.0.1"  # the app called in process: no network


class McpEndpoint:
    """The ASGI app at ``/mcp``; ``app`` is the corral app its tools call."""

    def __init__(self, app: ASGIApp, version: str = "") -> None:
        self.app = app
        self.server = build(self.connect, version=version)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve requests while entered. The SDK's session manager (a task group, so it is
        entered and left in one task: a task of its own, as a lifespan may be left in
        another task than it was entered in) runs once: a new one each time."""
        # Clients authenticate by header (no cookie), so a browser's DNS rebinding gains
        # nothing: no Host check, which would refuse every host but localhost.
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        started, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with manager.run():
                started.set()
                await stop.wait()

        task = asyncio.create_task(run(), name="mcp session manager")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if task.done():
            task.result()  # it failed to start: its error
        try:
            yield
        finally:
            stop.set()
            await task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            found = credentials.read(scope)
        except CorralError as exc:
            await JSONResponse({"error": exc.message}, status_code=400)(scope, receive, send)
            return
        if not (found.bearer or found.api_key):
            refusal = JSONResponse(
                {"error": "an API key or token is required (X-API-Key or Authorization: Bearer)"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="corral"'},
            )
            await refusal(scope, receive, send)
            return
        await self.server.session_manager.handle_request(scope, receive, send)

    @asynccontextmanager
    async def connect(self, ctx: Context) -> AsyncIterator[Api]:
        """The API as the caller of ``ctx``'s request: the app, with its credential headers."""
        sent = ctx.headers or {}
        headers = {name: sent[name] for name in FORWARDED if name in sent}
        # the caller's address too: a failed credential is rate limited per address
        request = ctx.request_context.request
        peer = getattr(request, "client", None)
        address = (peer.host, peer.port) if peer is not None else ("127.0.0.1", 0)
        transport = httpx.ASGITransport(app=self.app, client=address)
        async with httpx.AsyncClient(
            transport=transport, base_url=INTERNAL_BASE_URL, headers=headers, timeout=TIMEOUT
        ) as client:
            yield Api(client)
