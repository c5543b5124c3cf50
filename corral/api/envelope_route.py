"""What a surface that renders its own errors needs of routing: a route class whose
handler answers every exception through the surface's ``render``, and the methods a
path allows when a request's method is not one of them (its 405)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

Render = Callable[[Request, Exception], Response]


def envelope_route(render: Render) -> type[APIRoute]:
    """An ``APIRoute`` class whose errors, every one, are answered by ``render``."""

    class EnvelopeRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:  # noqa: BLE001 (every error of the surface, in its envelope)
                    return render(request, exc)

            return handle

    return EnvelopeRoute


def allowed_methods(request: Request, routes: Sequence[BaseRoute]) -> set[str]:
    """The methods of ``routes`` whose path matches ``request``'s (none: no route has it)."""
    allowed: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match is Match.PARTIAL and isinstance(route, APIRoute):
            allowed |= route.methods or set()
    return allowed
