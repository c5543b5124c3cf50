"""Admission of API requests, shared by every surface's auth dependency.

``admit(conn, core, surface, authenticate)`` is what a surface's principal dependency
returns. In order:

1. ``authenticate()``, the surface's own reading of its credential forms. When it
   fails (no, malformed, revoked, wrong or expired credential) the request is charged
   to the client's address on that surface, and once that bucket is empty the answer
   is 429 instead of 401: a burst of bad keys is limited like any other traffic.
2. The principal's bucket on the surface (``Principal.subject``: its key, user or
   org; see ``corral.auth.ratelimit``) is charged; empty, the answer is 429
   (LimitExceeded, rendered in the surface's envelope).
3. ``X-Client-Id``, when sent, becomes ``Principal.client_id`` (the audit trail keeps
   it). It must be 1..128 printable ASCII characters (400 naming ``X-Client-Id``).

The client's address is the TCP peer (``X-Forwarded-For`` is not trusted: put a proxy
that rewrites it in front if you need one). ``/healthz`` and ``/metrics`` have no
principal and are not limited.

``RateLimitHeaders`` (ASGI middleware) adds ``X-RateLimit-Limit`` and
``X-RateLimit-Remaining`` to every response whose request was charged, and
``Retry-After`` (whole seconds) to a 429, also on refused WebSocket handshakes.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import replace

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.auth.principal import Principal
from corral.auth.ratelimit import Verdict
from corral.core import Core
from corral.errors import InvalidInput, LimitExceeded, Unauthenticated

VERDICT = "corral.rate_limit"  # scope key: the Verdict of this request
CLIENT_ID = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,127}$")


async def admit(
    conn: HTTPConnection,
    core: Core,
    surface: str,
    authenticate: Callable[[], Awaitable[Principal]],
) -> Principal:
    """The caller, authenticated and within its rate limit (see the module docstring)."""
    try:
        principal = await authenticate()
    except Unauthenticated:
        _charge(conn, core, surface, "addr:" + (conn.client.host if conn.client else "unknown"))
        raise
    _charge(conn, core, surface, principal.subject)
    client_id = conn.headers.get("x-client-id")
    if client_id is not None:
        if not CLIENT_ID.match(client_id):
            raise InvalidInput("X-Client-Id must be 1 to 128 printable ASCII characters", field="X-Client-Id")
        principal = replace(principal, client_id=client_id)
    return principal


def _charge(conn: HTTPConnection, core: Core, surface: str, caller: str) -> None:
    verdict = core.limiter.take(surface, caller)
    if verdict.limit:
        conn.scope[VERDICT] = verdict
    if not verdict.allowed:
        core.metrics.rate_limited.labels(surface).inc()
        raise LimitExceeded(
            f"rate limit exceeded: {verdict.limit} requests a minute; retry in {verdict.retry_after_s} s"
        )


class RateLimitHeaders:
    """Puts the rate-limit headers of a charged request on its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                verdict: Verdict | None = scope.get(VERDICT)
                if verdict is not None:
                    message["headers"] = [*message.get("headers", ()), *_headers(verdict, message["status"])]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _headers(verdict: Verdict, status: int) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"x-ratelimit-limit", str(verdict.limit).encode()),
        (b"x-ratelimit-remaining", str(verdict.remaining).encode()),
    ]
    if status == 429 and verdict.retry_after_s:
        headers.append((b"retry-after", str(verdict.retry_after_s).encode()))
    return headers
