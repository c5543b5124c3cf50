"""The one place where errors become this surface's envelope, always a JSON object
(copass-core raises ``CopassApiError`` with the parsed body for every status >= 400):

{"detail": "human-readable message", "code": "...", "field": "the field" | null}

InvalidInput, request validation  400  invalid          field: the body, query or path field
Unauthenticated                   401  unauthenticated  (WWW-Authenticate: Bearer)
Forbidden                         403  forbidden        (also the kill switch on a create)
NotFound                          404  not_found        (also an unknown route)
Conflict                          409  conflict         (the per-user cap, a stopped session)
LimitExceeded                     429  limit            (Retry-After when the node's queue is full)
Unavailable                       503  unavailable
SandboxError                      502  sandbox          409 on exec: copass-core repeats
                                                        every 5xx, and the command ran
anything else                     500  internal         message "internal error"; the
                                                        traceback goes to the log
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from corral.api import rendering
from corral.api.rendering import AUTHENTICATE, first_invalid, retry_after, unexpected
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

log = logging.getLogger("corral.api.copass")

STATUSES: list[tuple[type[CorralError], int, str]] = [  # most specific first
    (InvalidInput, 400, "invalid"),
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (LimitExceeded, 429, "limit"),
    (Unavailable, 503, "unavailable"),
    (SandboxError, 502, "sandbox"),
]
_HTTP = {404: "not_found", 405: "invalid"}


def envelope(
    status: int, message: str, code: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = AUTHENTICATE if status == 401 else headers
    return JSONResponse(
        {"detail": message, "code": code, "field": field}, status_code=status, headers=headers
    )


def status_of(request: HTTPConnection, exc: CorralError) -> tuple[int, str]:
    for cls, status, code in STATUSES:
        if isinstance(exc, cls):
            if status == 502 and request.scope.get("method") == "POST" and request.url.path.endswith("/exec"):
                return 409, code
            return status, code
    return 500, "internal"


async def render(request: HTTPConnection, exc: Exception) -> Response:
    if isinstance(exc, CorralError):
        status, code = status_of(request, exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        message = "internal error" if status == 500 else exc.message
        return envelope(status, message, code, exc.field, retry_after(exc))
    if isinstance(exc, RequestValidationError):
        invalid = first_invalid(exc)
        return envelope(400, invalid.message, "invalid", invalid.field)
    if isinstance(exc, HTTPException):
        response = envelope(exc.status_code, str(exc.detail), _HTTP.get(exc.status_code, "invalid"))
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    unexpected(log, request, exc)
    return envelope(500, "internal error", "internal")


def install(app: FastAPI) -> None:
    """Make this envelope the sub-application's error format."""
    rendering.install(app, render)
