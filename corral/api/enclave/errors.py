"""The one place where errors become this surface's envelope (Fastify's, as the Enclave
control plane answers):

    {"statusCode": 400, "error": "Bad Request", "message": "...", "field": "limits.pids"}

Statuses from ``corral.api.status`` (InvalidInput 400, Unauthenticated 401 with
``WWW-Authenticate: Bearer``, Forbidden 403, NotFound 404, Conflict 409,
LimitExceeded 429, with ``Retry-After`` when the node's queue is full, ...); a request
that fails validation is 400 naming the field (``limits.memoryMiB``); anything
unexpected is 500 "internal error", its traceback in the log.

``EnclaveRoute`` is the route class of this surface's router: it renders every error
its routes raise (their dependencies and request validation included) here, so the
routes live in the main application beside the others with an envelope of their own.
A request under ``/sessions`` that no route takes is answered by ``unrouted`` here too:
405 naming the method (with ``Allow``) when the path is one of this surface's, else 404
naming the path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from corral.api.envelope_route import allowed_methods, envelope_route
from corral.api.rendering import AUTHENTICATE, first_invalid, retry_after, unexpected
from corral.api.status import message_of, status_of
from corral.errors import CorralError

log = logging.getLogger("corral.api.enclave")


def envelope(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    if status == 401:
        headers = AUTHENTICATE
    body = {"statusCode": status, "error": HTTPStatus(status).phrase, "message": message, "field": field}
    return JSONResponse(body, status_code=status, headers=headers)


def render(request: Request, exc: Exception) -> Response:
    if isinstance(exc, CorralError):
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
            return envelope(status, "internal error" if status == 500 else exc.message)
        return envelope(status, message_of(exc), exc.field, retry_after(exc))
    if isinstance(exc, RequestValidationError):
        invalid = first_invalid(exc)
        return envelope(400, invalid.message, invalid.where)
    if isinstance(exc, HTTPException):
        return envelope(exc.status_code, str(exc.detail))
    unexpected(log, request, exc)
    return envelope(500, "internal error")


EnclaveRoute = envelope_route(render)
"""The route class of this surface's routers: every error in its envelope."""


def unrouted(request: Request, routes: Sequence[BaseRoute]) -> JSONResponse:
    """The answer to a request that none of ``routes`` takes (see the module docstring)."""
    allowed = allowed_methods(request, routes)
    path = request.url.path
    if allowed:
        methods = ", ".join(sorted(allowed))
        message = f"method {request.method} is not allowed on {path} (allowed: {methods})"
        return envelope(405, message, headers={"Allow": methods})
    return envelope(404, f"no route {request.method} {path}")
