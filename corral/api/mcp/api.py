"""The one client the MCP tools use: corral's HTTP API, with the caller's credential.

Contract: ``Api.call`` returns the answer's JSON (None for an empty answer) and raises
``ToolError`` for everything else, never an httpx error: an error status becomes
corral's own message (``"404: sandbox sb-... not found"``, with the field a 400 names),
an unreachable server says so. The MCP server turns a ``ToolError`` into a tool result
marked as an error, so the session carries on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
from mcp.server.mcpserver.exceptions import ToolError

CREDENTIAL_HEADERS = ("authorization", "x-api-key")
"""The request headers that carry a caller's credential (API key or JWT)."""
TIMEOUT = httpx.Timeout(300.0, connect=10.0)


def segment(value: str) -> str:
    """``value`` as one path segment (an id never becomes a path)."""
    return quote(value, safe="")


def message_of(answer: httpx.Response) -> str:
    """What a corral error envelope says (``{"error": "..."}`` or Enclave's
    ``{"message", "field"}``), else a short excerpt of the body."""
    try:
        body = answer.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("error") or body.get("detail")
        if isinstance(message, dict):
            message = message.get("message")
        if isinstance(message, str) and message:
            field = body.get("field")
            return f"{message} (field: {field})" if isinstance(field, str) and field else message
    text = answer.text.strip()
    return text[:300] if text else answer.reason_phrase or "request failed"


class Api:
    """Corral's HTTP API through ``client`` (its base URL and credential already set)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """``method path`` (``json=``, ``params=``, ``content=`` as httpx takes them)."""
        try:
            answer = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ToolError(f"cannot reach corral at {self.client.base_url}: {exc}") from exc
        if answer.is_error:
            raise ToolError(f"{answer.status_code}: {message_of(answer)}")
        if not answer.content:
            return None
        if answer.headers.get("content-type", "").startswith("application/json"):
            return answer.json()
        return answer.text

    @asynccontextmanager
    async def lines(self, path: str) -> AsyncIterator[AsyncIterator[str]]:
        """The lines of a streamed answer (an SSE stream), as they come."""
        try:
            async with self.client.stream("GET", path) as answer:
                if answer.is_error:
                    await answer.aread()
                    raise ToolError(f"{answer.status_code}: {message_of(answer)}")
                yield answer.aiter_lines()
        except httpx.HTTPError as exc:
            raise ToolError(f"cannot reach corral at {self.client.base_url}: {exc}") from exc
