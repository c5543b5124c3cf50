"""The one place where errors become this surface's envelope (spec 002):

{"error": "human-readable message", "code": "ERROR_CODE", "details": "..." | null}

InvalidInput with a field        400  INVALID_PARAMETER   details: the field
InvalidInput, request validation 400  INVALID_REQUEST     (INVALID_PARAMETER naming a field)
Unauthenticated                  401  UNAUTHORIZED
Forbidden                        403  FORBIDDEN
NotFound                         404  SANDBOX_NOT_FOUND   (NOT_FOUND for an unknown route)
Conflict                         409  SANDBOX_NOT_READY
LimitExceeded                    429  QUOTA_EXCEEDED
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
from typing import Any, cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

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


def envelope(status: int, message: str, code: str, details: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="corral"'} if status == 401 else None
    body = {"error": message, "code": code, "details": details}
    return JSONResponse(body, status_code=status, headers=headers)


def of(exc: CorralError) -> tuple[int, str]:
    for cls, status, code in CODES:
        if isinstance(exc, cls):
            if cls is InvalidInput and exc.field:
                return status, "INVALID_PARAMETER"
            return status, code
    return 500, "INTERNAL"


async def render(conn: HTTPConnection, response: JSONResponse) -> Response | None:
    """``response`` over HTTP, or before a WebSocket's upgrade (see above)."""
    if not isinstance(conn, WebSocket):
        return response
    if conn.application_state == WebSocketState.CONNECTING:
        if "websocket.http.response" in conn.scope.get("extensions", {}):
            return response
        await conn.close(code=1008)
    elif conn.application_state == WebSocketState.CONNECTED:
        await conn.close(code=1011)
    return None


async def on_corral_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, CorralError)
    status, code = of(exc)
    if status >= 500:
        log.error("%s: %s", type(exc).__name__, exc.message)
    message = "internal error" if status == 500 else exc.message
    return await render(conn, envelope(status, message, code, exc.field))


async def on_validation_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, RequestValidationError | WebSocketRequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return await render(conn, envelope(400, "request body is not valid JSON", "INVALID_REQUEST"))
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    if where is None:
        return await render(conn, envelope(400, "request body is invalid", "INVALID_REQUEST"))
    message = f"{where}: {str(first.get('msg', 'is invalid')).removeprefix('Value error, ').lower()}"
    return await render(conn, envelope(400, message, "INVALID_PARAMETER", where))


async def on_http_error(conn: HTTPConnection, exc: Exception) -> Response | None:
    assert isinstance(exc, HTTPException)
    response = envelope(exc.status_code, str(exc.detail), _HTTP_CODES.get(exc.status_code, "INTERNAL"))
    if exc.headers:
        response.headers.update(exc.headers)
    return await render(conn, response)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
    return envelope(500, "internal error", "INTERNAL")


def install(app: FastAPI) -> None:
    """Make this envelope the (sub-)application's error format."""
    handlers = {
        CorralError: on_corral_error,
        RequestValidationError: on_validation_error,
        WebSocketRequestValidationError: on_validation_error,
        HTTPException: on_http_error,
        Exception: on_unexpected,
    }
    for exc_type, handler in handlers.items():
        app.add_exception_handler(exc_type, cast(Any, handler))
