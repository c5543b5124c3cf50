"""The one place where errors become this surface's envelope (spec 002):

{"error": "human-readable message", "code": "ERROR_CODE", "details": "..." | null}

InvalidInput with a field        400  INVALID_PARAMETER   details: the field
InvalidInput, request validation 400  INVALID_REQUEST     (INVALID_PARAMETER naming a field)
Unauthenticated                  401  UNAUTHORIZED
Forbidden                        403  FORBIDDEN
NotFound                         404  SANDBOX_NOT_FOUND   (NOT_FOUND for an unknown route)
Conflict                         409  SANDBOX_NOT_READY
LimitExceeded                    429  QUOTA_EXCEEDED      (Retry-After when the node's queue is full)
Unavailable                      503  POD_CREATE_FAILED   (creation switched off, retryable)
ExecTimeout                      504  EXEC_TIMEOUT
SandboxError (and subclasses)    503  SIDECAR_UNREACHABLE
anything else                    500  INTERNAL            message "internal error"; the
                                                          traceback goes to the log

On the WebSocket route an error before the upgrade is the same HTTP answer (the
WebSocket Denial Response extension), or a close with 1008 where the server lacks it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from corral.api import rendering
from corral.api.rendering import AUTHENTICATE, first_invalid, retry_after, send, unexpected
from corral.errors import (
    Conflict,
    CorralError,
    ExecTimeout,
    Forbidden,
    InvalidInput,
    LimitExceeded,
    NotFound,
    SandboxError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger("corral.api.xgen")

CODES: list[tuple[type[CorralError], int, str]] = [  # most specific first
    (InvalidInput, 400, "INVALID_REQUEST"),
    (Unauthenticated, 401, "UNAUTHORIZED"),
    (Forbidden, 403, "FORBIDDEN"),
    (NotFound, 404, "SANDBOX_NOT_FOUND"),
    (Conflict, 409, "SANDBOX_NOT_READY"),
    (LimitExceeded, 429, "QUOTA_EXCEEDED"),
    (Unavailable, 503, "POD_CREATE_FAILED"),
    (ExecTimeout, 504, "EXEC_TIMEOUT"),
    (SandboxError, 503, "SIDECAR_UNREACHABLE"),
]
_HTTP_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "INVALID_REQUEST",
}


def envelope(
    status: int, message: str, code: str, details: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = AUTHENTICATE if status == 401 else headers
    body = {"error": message, "code": code, "details": details}
    return JSONResponse(body, status_code=status, headers=headers)


def of(exc: CorralError) -> tuple[int, str]:
    for cls, status, code in CODES:
        if isinstance(exc, cls):
            if cls is InvalidInput and exc.field:
                return status, "INVALID_PARAMETER"
            return status, code
    return 500, "INTERNAL"


async def render(conn: HTTPConnection, exc: Exception) -> Response | None:
    """The envelope of ``exc``, over HTTP or a WebSocket (see above)."""
    if isinstance(exc, CorralError):
        status, code = of(exc)
        if status >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        message = "internal error" if status == 500 else exc.message
        response = envelope(status, message, code, exc.field, retry_after(exc))
    elif isinstance(exc, RequestValidationError | WebSocketRequestValidationError):
        invalid = first_invalid(exc)
        code = "INVALID_PARAMETER" if invalid.where else "INVALID_REQUEST"
        response = envelope(400, invalid.message, code, invalid.where)
    elif isinstance(exc, HTTPException):
        response = envelope(exc.status_code, str(exc.detail), _HTTP_CODES.get(exc.status_code, "INTERNAL"))
        if exc.headers:
            response.headers.update(exc.headers)
    else:
        unexpected(log, conn, exc)
        response = envelope(500, "internal error", "INTERNAL")
    return await send(conn, response, close=1011)


def install(app: FastAPI) -> None:
    """Make this envelope the (sub-)application's error format."""
    rendering.install(app, render)
