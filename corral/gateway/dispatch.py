"""The gateway as the app sees it: ``match`` tells whether a request is the gateway's,
``serve`` answers it.

Order of work for a request that is the gateway's: a redirect for a bare path prefix;
a CORS preflight answered in place; a malformed id or port is 404; then ``Access``
(kill switch 503, credentials 401, ownership and previews 404); then the request is
forwarded (HTTP) or bridged (WebSocket). A preview token that came as ``?token=`` on a
host-routed request is set as a host-only cookie (``HttpOnly; SameSite=Lax``, and
``Secure`` over HTTPS), so a browser's later requests for the page's resources carry
it. Path-routed requests get no cookie: all of them share corral's origin, and a
cookie there would let one sandbox's page read another's.

Every request forwarded counts as activity of its sandbox (it defers the idle
timeout), as does every WebSocket message.
"""

from __future__ import annotations

from typing import Any

from corral.errors import CorralError, NotFound
from corral.gateway.access import NOT_FOUND, Access
from corral.gateway.cors import CorsPolicy
from corral.gateway.fast_path import FastPath
from corral.gateway.forward import forward
from corral.gateway.headers import COOKIE
from corral.gateway.meter import Meter
from corral.gateway.replies import error, redirect, reply
from corral.gateway.routing import Redirect, Router, Target
from corral.gateway.services import GatewayServices
from corral.gateway.upstream import Pool, UpstreamLimits
from corral.gateway.websocket import relay


class Gateway:
    def __init__(self, services: GatewayServices) -> None:
        s = services.settings
        self.services = services
        self.router = Router([s.gateway_domain, *s.gateway_extra_domains])
        self.access = Access(services)
        self.cors = CorsPolicy(s.gateway_cors_origins)
        self.limits = UpstreamLimits(
            connect_timeout=s.gateway_connect_timeout_s,
            read_timeout=s.gateway_read_timeout_s,
            head_timeout=s.gateway_head_timeout_s,
            max_header_bytes=s.gateway_max_header_bytes,
            max_headers=s.gateway_max_headers,
        )
        self.pool = Pool(self.limits)
        self.fast_path = FastPath(services, self.router, self.access, self.cors, self.pool)

    def match(self, scope: Any) -> Target | Redirect | None:
        """The gateway's reading of a request, or None if it is not the gateway's."""
        return self.router.match(scope)

    async def serve(self, found: Target | Redirect, scope: Any, receive: Any, send: Any) -> None:
        meter = Meter(receive, send)
        try:
            await self._serve(found, scope, meter.receive, meter.send)
        finally:
            self.services.metrics.gateway_request(meter.status or 499, meter.bytes_in, meter.bytes_out)

    async def _serve(self, found: Target | Redirect, scope: Any, receive: Any, send: Any) -> None:
        origin = _header(scope, b"origin")
        cors = self.cors.response_headers(origin) if origin else []
        try:
            if isinstance(found, Redirect):
                await redirect(scope, send, found.location)
                return
            if scope["type"] == "http" and scope["method"] == "OPTIONS" and origin:
                method = _header(scope, b"access-control-request-method")
                if method:
                    asked = _header(scope, b"access-control-request-headers")
                    await reply(scope, send, 204, self.cors.preflight_headers(origin, method, asked))
                    return
            if not found.port:
                raise NotFound(NOT_FOUND)
            grant = await self.access.check(found, scope)
            self.services.sandboxes.touch(grant.route.sandbox_id)
            if scope["type"] == "http":
                extra = cors
                if grant.query_token and found.by_host:
                    extra = [*cors, (b"set-cookie", self._cookie(grant.token, scope))]
                await forward(self.pool, found, grant, scope, receive, send, extra)
            else:
                await relay(
                    found,
                    grant,
                    scope,
                    receive,
                    send,
                    self.limits,
                    self.services.settings.gateway_ws_max_message,
                    self.services.sandboxes,
                )
        except CorralError as exc:
            await error(scope, send, exc, cors)

    def close(self) -> None:
        """Close the pooled connections (at shutdown)."""
        self.pool.close()

    @staticmethod
    def _cookie(token: str, scope: Any) -> bytes:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return f"{COOKIE.decode()}={token}; Path=/; HttpOnly; SameSite=Lax{secure}".encode("latin-1")


def _header(scope: Any, wanted: bytes) -> bytes:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return b""
