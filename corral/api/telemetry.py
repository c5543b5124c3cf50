"""HTTP metrics: ``RequestMetrics`` (ASGI middleware) and the ``GET /metrics`` endpoint.

Every HTTP request is counted and timed (``xgen_http_requests_total``,
``xgen_http_request_duration_seconds``, see ``corral.metrics``) under its route
template, read from the route the router matched (``/api/sandboxes/{sandbox_id}``;
``/api/v1/...`` for the mounted xgen surface), or ``<unmatched>``. The time runs until
the response body is sent. WebSockets are not counted here.
"""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.metrics import CONTENT_TYPE, Metrics

UNMATCHED = "<unmatched>"


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = scope.get("root_path", "")
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.http_request(
                scope["method"], template(scope, root), status, time.perf_counter() - started
            )


def template(scope: Scope, root: str) -> str:
    """The route template a request matched, below the server's own root path.

    The matched route knows its own template but not the prefixes it was included or
    mounted under (``/api``, ``/api/v1``), which are literal: they are the segments of
    the request's path in front of the route's own.
    """
    route = scope.get("route")
    own = getattr(route, "path", None)
    if not isinstance(own, str) or isinstance(route, Mount):
        return UNMATCHED
    path = str(scope.get("path", ""))
    if root and path.startswith(root):
        path = path[len(root) :]
    have, want = path.split("/")[1:], own.split("/")[1:]
    cut = len(have) - len(want)
    if cut < 0 or any(w != h for w, h in zip(want, have[cut:], strict=True) if not w.startswith("{")):
        return UNMATCHED
    return "/" + "/".join(have[:cut] + want)


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text of this app's registry. No auth (like ``/healthz``)."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE)
