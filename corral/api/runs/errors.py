"""The one place where errors become this surface's envelope (spec 004):

    {"error": {"code": "INVALID_FIELD", "message": "...", "hint": "...", "requestId": "<uuid>"}}

plus ``field`` naming the bad field of a 400 (``message``, ``prompts.userPrompt``...).

InvalidInput naming a field      400 INVALID_FIELD
InvalidInput, a body not JSON    400 INVALID_REQUEST
Unauthenticated                  401 UNAUTHORIZED (no credential), INVALID_API_KEY (a wrong one)
Forbidden                        403 FORBIDDEN
NotFound, an unknown route       404 RESOURCE_NOT_FOUND
a wrong method                   405 INVALID_REQUEST (with Allow)
LimitExceeded                    429 RATE_LIMITED (Retry-After)
Conflict                         429 CONCURRENCY_LIMIT_EXCEEDED (the org's live sandboxes)
Unavailable                      503 SERVICE_UNAVAILABLE (ModelUnavailable: no model key)
SandboxError                     500 SANDBOX_FAILED
anything else                    500 INTERNAL_ERROR, message "internal error" (traceback logged)

Every answer carries its ``requestId`` as ``X-Request-Id``; the log line of a 5xx names it.
``RunsRoute`` is the route class of this surface's routers: it renders every error its
routes raise (their dependencies and request validation included) here.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from corral.api.envelope_route import allowed_methods, envelope_route
from corral.api.rendering import AUTHENTICATE, first_invalid, retry_after, unexpected
from corral.api.status import message_of
from corral.errors import (
    Conflict,
    CorralError,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    SandboxError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("corral.api.runs")

# (error, status, code, hint), most specific first
CODES: list[tuple[type[CorralError], int, str, str]] = [
    (InvalidInput, 400, "INVALID_FIELD", "fix the field named and send the request again"),
    (Unauthenticated, 401, "INVALID_API_KEY", "send Authorization: Bearer <API key> with a valid key"),
    (Forbidden, 403, "FORBIDDEN", "use a key whose role may do this (viewers only read)"),
    (NotFound, 404, "RESOURCE_NOT_FOUND", "check the id: it is unknown, or of another workspace"),
    (LimitExceeded, 429, "RATE_LIMITED", "wait Retry-After seconds, then back off exponentially"),
    (Conflict, 429, "CONCURRENCY_LIMIT_EXCEEDED", "wait for a desktop of this workspace to end"),
    (Unavailable, 503, "SERVICE_UNAVAILABLE", "retry later; an operator may need to configure the server"),
    (SandboxError, 500, "SANDBOX_FAILED", "retry; the desktop could not be provisioned"),
]
MISSING_HINT = "send Authorization: Bearer <API key>"


def envelope(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    request_id = str(uuid.uuid4())
    body: dict[str, Any] = {"code": code, "message": message, "hint": hint, "requestId": request_id}
    if field is not None:
        body["field"] = field
    out = {"X-Request-Id": request_id, **(headers or {})}
    if status == 401:
        out.update(AUTHENTICATE)
    if status >= 500:
        log.error("request %s answered %s %s: %s", request_id, status, code, message)
    return JSONResponse({"error": body}, status_code=status, headers=out)


def render(request: Request, exc: Exception) -> Response:
    if isinstance(exc, CorralError):
        for cls, status, code, hint in CODES:
            if isinstance(exc, cls):
                if status == 400 and exc.field is None:
                    code = "INVALID_REQUEST"
                if status == 401 and exc.message.startswith("missing credential"):
                    code, hint = "UNAUTHORIZED", MISSING_HINT
                if isinstance(exc, Unavailable) and exc.code == "model_unavailable":
                    hint = "set CORRAL_ANTHROPIC_API_KEY on the server and restart it"
                return envelope(status, code, message_of(exc), hint, exc.field, retry_after(exc))
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc.message)
        return envelope(500, "INTERNAL_ERROR", "internal error")
    if isinstance(exc, RequestValidationError):
        invalid = first_invalid(exc)
        if invalid.where is None:
            return envelope(400, "INVALID_REQUEST", invalid.message, "send a JSON object")
        return envelope(400, "INVALID_FIELD", invalid.message, "fix the field named", invalid.where)
    if isinstance(exc, HTTPException):
        code = "RESOURCE_NOT_FOUND" if exc.status_code == 404 else "INVALID_REQUEST"
        return envelope(exc.status_code, code, str(exc.detail))
    unexpected(log, request, exc)
    return envelope(500, "INTERNAL_ERROR", "internal error")


RunsRoute = envelope_route(render)
"""The route class of this surface's routers: every error in its envelope."""


def unrouted(request: Request, routes: Sequence[BaseRoute]) -> JSONResponse:
    """The answer to a request that none of ``routes`` takes: 405 naming the method
    (with ``Allow``) on a path of this surface, else 404 naming the path."""
    allowed = allowed_methods(request, routes)
    path = request.url.path
    if allowed:
        methods = ", ".join(sorted(allowed))
        message = f"method {request.method} is not allowed on {path} (allowed: {methods})"
        return envelope(405, "INVALID_REQUEST", message, f"use {methods}", headers={"Allow": methods})
    return envelope(404, "RESOURCE_NOT_FOUND", f"no route {request.method} {path}", "check the path")
