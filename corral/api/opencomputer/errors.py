"""The one place where errors become this surface's envelope: ``{"error": "message"}``.

Statuses (the spec's table, made precise where it is silent):

    InvalidInput, request validation       400   message names the field: "cpuCount: ..."
    Unauthenticated                        401   says which credential form is expected
    Forbidden                              403
    NotFound (and malformed path ids)      404
    Conflict (e.g. sandbox not running)    409
    LimitExceeded                          429   a quota or rate: the SDKs retry it later
    Busy                                   429   the node's create queue is full, with
                                                 Retry-After: the seconds its estimate says
    InsufficientStorage                    507   the sandbox's disk is full (ENOSPC, EDQUOT);
                                                 as in WebDAV, the request was fine but the
                                                 server cannot store it, so a retry won't help
    Unavailable                            503
    SandboxWaking                          503   {"error": ..., "waking": true} with Retry-After: 1:
                                                 the sandbox is hibernated and waking in the
                                                 background (X-OSB-Async-Wake: 1); retry
    ExecTimeout                            504   the sandbox did not answer in time
    SandboxError, RuntimeFailure,          502   the sandbox (our upstream) failed
      AgentError
    CorralError, anything unexpected       500   "internal error"; the traceback goes to the
                                                 log, never to the client

On a WebSocket route an error before the handshake is accepted is sent as an HTTP
response with the same status and envelope (the WebSocket Denial Response extension;
clients see e.g. ``InvalidStatus: HTTP 401``); after it, the socket is closed with code
``4000 + status`` for client errors (4400, 4401, 4404, 4409) or 1011, and the message as
the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket

from corral.api import rendering
from corral.api.rendering import AUTHENTICATE, method_of, retry_after, send, unexpected
from corral.api.status import message_of, status_of
from corral.errors import (
    CorralError,
    SandboxWaking,
)

log = logging.getLogger("corral.api")


# Pydantic error types, in words a client understands.
_PHRASES = {
    "missing": "is required",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "string_type": "must be a string",
    "bool_type": "must be a boolean",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
}
_PLACES = ("body", "query", "path", "header", "cookie")


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic/FastAPI validation errors as one line: ``cpuCount: must be an integer``."""
    parts: list[str] = []
    for error in errors:
        kind = str(error.get("type", ""))
        loc = [p for p in error.get("loc", ()) if p is not None]
        if kind == "json_invalid":
            detail = (error.get("ctx") or {}).get("error")
            parts.append("request body is not valid JSON" + (f": {detail}" if detail else ""))
            continue
        if loc and loc[0] in _PLACES:
            loc = loc[1:]
        where = ""
        for p in loc:
            where += f"[{p}]" if isinstance(p, int) else (f".{p}" if where else str(p))
        phrase = (
            _PHRASES.get(kind) or str(error.get("msg", "is invalid")).removeprefix("Value error, ").lower()
        )
        parts.append(f"{where}: {phrase}" if where else f"request body {phrase}")
    return "; ".join(dict.fromkeys(parts)) or "invalid request"


async def render(conn: HTTPConnection, exc: Exception) -> Response | None:
    """The envelope of ``exc``, over HTTP or a WebSocket (see above)."""
    if isinstance(exc, CorralError):
        status = status_of(exc)
        if isinstance(exc, SandboxWaking) and not isinstance(conn, WebSocket):
            body = {"error": exc.message, "waking": True}
            return JSONResponse(body, status_code=status, headers={"Retry-After": "1"})
        if status >= 500:
            log.error("%s %s: %s: %s", method_of(conn), conn.url.path, type(exc).__name__, exc.message)
        message = "internal error" if type(exc) is CorralError else message_of(exc)
        return await _send(conn, status, message, retry_after(exc))
    if isinstance(exc, RequestValidationError | WebSocketRequestValidationError):
        return await _send(conn, 400, describe(exc.errors()))
    if isinstance(exc, HTTPException):  # Starlette's: unknown route, wrong method, unreadable body
        return await _send(conn, exc.status_code, str(exc.detail), exc.headers)
    unexpected(log, conn, exc)
    return await _send(conn, 500, "internal error")


async def _send(
    conn: HTTPConnection, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response | None:
    """``{"error": message}`` with ``status`` over HTTP or a WebSocket (see above)."""
    response = JSONResponse(
        {"error": message}, status_code=status, headers=AUTHENTICATE if status == 401 else None
    )
    if headers:
        response.headers.update(headers)
    return await send(conn, response, 4000 + status if status < 500 else 1011, message)


def install(app: FastAPI) -> None:
    """Make this surface's envelope the app's error format."""
    rendering.install(app, render)
