"""What every surface's error envelope shares; each surface renders its own body, in
its ``errors.py``, with the statuses of ``corral.api.status``.

- ``install(app, render)``: ``render(conn, exc)`` answers every error of ``app``:
  corral's, a request that failed validation (HTTP or WebSocket), Starlette's own (an
  unknown route, a wrong method, an unreadable body) and anything unexpected.
- ``first_invalid(exc)``: the first problem of a request that failed validation, in
  words a client reads (``limits.pids: input should be ...``), and the field it names.
- ``send(conn, response, close, reason)``: an envelope over HTTP, or on a WebSocket:
  before the upgrade as the same HTTP answer (the WebSocket Denial Response extension; a
  close with 1008 where the server lacks it), after it a close with ``close``.
- ``retry_after(exc)``: the ``Retry-After`` header of an error that waiting mends (a full
  queue of creates or exec round trips: ``Busy``), which every surface's 429 carries.
- ``unexpected(log, conn, exc)``: the traceback of an error nobody expected, to the log
  (a client reads only "internal error").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from corral.errors import Busy, CorralError

Render = Callable[[HTTPConnection, Exception], Awaitable[Response | None]]

AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="corral"'}
"""The header of every 401: which credential form is expected."""

NOT_JSON = "request body is not valid JSON"
NOT_OBJECT = "request body must be a JSON object"


def install(app: FastAPI, render: Render) -> None:
    """Make ``render`` the answer to every error of ``app`` (see the module docstring)."""
    for exc_type in (
        CorralError,
        RequestValidationError,
        WebSocketRequestValidationError,
        HTTPException,
        Exception,
    ):
        # Starlette types handlers as for HTTP or for WebSockets; ``render`` serves both.
        app.add_exception_handler(exc_type, cast(Any, render))


@dataclass(frozen=True)
class Invalid:
    """The first problem of a request that failed validation."""

    message: str  # "limits.pids: input should be a valid integer", NOT_JSON, NOT_OBJECT
    where: str | None  # the field's path ("limits.pids"); None for the body as a whole
    field: str | None  # the top-level field of the path ("limits")


def first_invalid(exc: RequestValidationError | WebSocketRequestValidationError) -> Invalid:
    """See ``Invalid``; the place (body, query, path...) is left out of the path."""
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        return Invalid(NOT_JSON, None, None)
    loc = [str(part) for part in first.get("loc", ())[1:]]
    if not loc:
        return Invalid(NOT_OBJECT, None, None)
    where = ".".join(loc)
    what = str(first.get("msg", "is invalid")).removeprefix("Value error, ").lower()
    return Invalid(f"{where}: {what}", where, loc[0])


async def send(conn: HTTPConnection, response: Response, close: int, reason: str = "") -> Response | None:
    """``response`` over HTTP or a WebSocket (see the module docstring); ``close`` is the
    close code for a WebSocket already accepted, ``reason`` its reason (cut to the 123
    bytes of UTF-8 a close allows)."""
    if not isinstance(conn, WebSocket):
        return response
    reason = reason.encode()[:123].decode(errors="ignore")
    if conn.application_state == WebSocketState.CONNECTING:
        if "websocket.http.response" in conn.scope.get("extensions", {}):
            return response
        await conn.close(code=1008, reason=reason)
    elif conn.application_state == WebSocketState.CONNECTED:
        await conn.close(code=close, reason=reason)
    return None


def retry_after(exc: CorralError) -> dict[str, str]:
    """See the module docstring; nothing for any other error."""
    return {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, Busy) else {}


def method_of(conn: HTTPConnection) -> str:
    """The request's method, ``WS`` for a WebSocket."""
    return "WS" if isinstance(conn, WebSocket) else str(conn.scope.get("method", ""))


def unexpected(log: logging.Logger, conn: HTTPConnection, exc: Exception) -> None:
    log.exception("%s %s failed", method_of(conn), conn.url.path, exc_info=exc)
