"""``AnthropicClient``: the ``corral.ports.MessagesApi``, calls of the Anthropic
Messages API from corral's host.

Every request goes to ``<base_url>/v1/messages`` with ``x-api-key`` set to the key and
``anthropic-version`` (``VERSION``), and ``anthropic-beta`` naming the beta of each tool
the body offers that needs one (``BETAS``: the computer-use tools); proxy settings of the environment are not used,
redirects are not followed (the key goes to ``base_url`` only). HTTPS upstreams are
checked against ``ca_file`` (PEM) or httpx's bundle.

Contract: ``create`` returns the answer's status and parsed JSON (None when the body is
not JSON) or raises Unavailable for no answer within ``timeout`` seconds, or a
connection or TLS failure: the message names the failure's type, never the key.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Mapping

import httpx

from corral.errors import Unavailable

VERSION = "2023-06-01"
BETAS = {  # a tool type -> the beta its requests must name
    "computer_20250124": "computer-use-2025-01-24",
    "computer_20251124": "computer-use-2025-11-24",
}


class AnthropicClient:
    def __init__(
        self, base_url: str, key: str, *, timeout: float = 600.0, ca_file: str | None = None
    ) -> None:
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            verify = ssl.create_default_context(cafile=ca_file)
        self.url = base_url.rstrip("/") + "/v1/messages"
        self._key = key
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=10.0),
            verify=verify,
            follow_redirects=False,
            trust_env=False,
        )

    async def create(self, body: Mapping[str, object]) -> tuple[int, object]:
        headers = {"x-api-key": self._key, "anthropic-version": VERSION, "content-type": "application/json"}
        betas = betas_of(body)
        if betas:
            headers["anthropic-beta"] = ",".join(betas)
        try:
            answer = await self._client.post(self.url, content=json.dumps(body).encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"the model API could not be reached: {type(exc).__name__}") from None
        try:
            return answer.status_code, answer.json()
        except ValueError:
            return answer.status_code, None

    async def close(self) -> None:
        await self._client.aclose()


def betas_of(body: Mapping[str, object]) -> list[str]:
    """The betas the tools of ``body`` need, in order, once each."""
    tools = body.get("tools")
    found: list[str] = []
    for tool in tools if isinstance(tools, list) else []:
        beta = BETAS.get(str(tool.get("type"))) if isinstance(tool, dict) else None
        if beta is not None and beta not in found:
            found.append(beta)
    return found
