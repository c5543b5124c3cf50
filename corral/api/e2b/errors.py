"""The one place where errors become this surface's answers, in two shapes:

- HTTP (the control plane, ``/files``, ``/envs``): the E2B API's ``{"code": <status>,
  "message": "..."}`` with the statuses of ``corral.api.status``, which the SDK turns into
  its own exceptions (404 NotFoundException or SandboxNotFoundException, 401
  AuthenticationException, 429 RateLimitException, 400 InvalidArgumentException, 507
  NotEnoughSpaceException, anything else SandboxException with the message).
- Connect (``process`` and ``filesystem``): a ``ConnectError`` with the code below,
  which connectrpc writes in the protocol's own form (HTTP status and JSON body for a
  unary call, the end-of-stream message for a stream):

  InvalidInput invalid_argument · Unauthenticated unauthenticated · Forbidden
  permission_denied · NotFound not_found · Conflict failed_precondition ·
  InsufficientStorage / LimitExceeded resource_exhausted · ExecTimeout deadline_exceeded ·
  Unavailable / SandboxError unavailable · anything else internal, "internal error"
  (the traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from connectrpc.code import Code
from connectrpc.codec import Codec, proto_binary_codec, proto_json_codec
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.responses import Response

from corral.api import rendering
from corral.api.rendering import first_invalid, retry_after, unexpected
from corral.api.status import message_of, status_of
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

log = logging.getLogger("corral.api.e2b")
REQ = TypeVar("REQ")
RES = TypeVar("RES")

CODES: list[tuple[type[CorralError], Code]] = [  # most specific first
    (InvalidInput, Code.INVALID_ARGUMENT),
    (Unauthenticated, Code.UNAUTHENTICATED),
    (Forbidden, Code.PERMISSION_DENIED),
    (NotFound, Code.NOT_FOUND),
    (Conflict, Code.FAILED_PRECONDITION),
    (LimitExceeded, Code.RESOURCE_EXHAUSTED),
    (ExecTimeout, Code.DEADLINE_EXCEEDED),
    (Unavailable, Code.UNAVAILABLE),
    (SandboxError, Code.UNAVAILABLE),
]


# ---- HTTP ----------------------------------------------------------------------------


def envelope(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": status, "message": message}, status_code=status, headers=headers)


FIELDS = {"envs": "envVars", "template": "templateID"}
"""corral's field names that E2B's bodies spell otherwise."""


def answer(exc: CorralError) -> JSONResponse:
    """The envelope of ``exc`` (500s say "internal error" and are logged), a field named
    as E2B's body names it."""
    status = status_of(exc)
    if status >= 500 and status != 503:
        log.error("%s: %s", type(exc).__name__, exc.message)
    field = FIELDS.get(exc.field or "")
    return envelope(status, "internal error" if status == 500 else message_of(exc, field), retry_after(exc))


async def render(request: HTTPConnection, exc: Exception) -> Response:
    if isinstance(exc, CorralError):
        return answer(exc)
    if isinstance(exc, RequestValidationError):
        return envelope(400, first_invalid(exc).message)
    if isinstance(exc, HTTPException):
        return envelope(exc.status_code, str(exc.detail))
    unexpected(log, request, exc)
    return envelope(500, "internal error")


def install(app: FastAPI) -> None:
    """Make this envelope the control plane's error format."""
    rendering.install(app, render)


# ---- Connect -------------------------------------------------------------------------


def connect_error(exc: BaseException) -> ConnectError:
    """What a Connect client reads for ``exc``."""
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, CorralError):
        for cls, code in CODES:
            if isinstance(exc, cls):
                return ConnectError(code, message_of(exc))
        log.error("%s: %s", type(exc).__name__, exc.message)
    else:
        log.error("an envd call failed", exc_info=exc)
    return ConnectError(Code.INTERNAL, "internal error")


class CheckedCodec:
    """A connectrpc codec whose undecodable request is ``invalid_argument`` naming what
    was wrong (connectrpc's own codecs leave it ``unknown``)."""

    def __init__(self, codec: Codec[Any, Any]) -> None:
        self.codec = codec

    def name(self) -> str:
        return self.codec.name()

    def encode(self, message: Any) -> bytes:
        return self.codec.encode(message)

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return self.codec.decode(data, message_class)
        except Exception as exc:
            raise ConnectError(
                Code.INVALID_ARGUMENT,
                f"the request is not a valid {message_class.__name__} ({self.name()}): {exc}",
            ) from exc


CODECS = [CheckedCodec(proto_binary_codec()), CheckedCodec(proto_json_codec())]


class ConnectErrors:
    """A connectrpc server interceptor: every error a handler raises leaves as
    ``connect_error`` says (unary, client-stream and server-stream calls alike)."""

    async def intercept_unary(
        self,
        call_next: Callable[[REQ, RequestContext[Any, Any]], Awaitable[RES]],
        request: REQ,
        ctx: RequestContext[Any, Any],
    ) -> RES:
        try:
            return await call_next(request, ctx)
        except Exception as exc:
            raise connect_error(exc) from exc

    async def intercept_client_stream(
        self,
        call_next: Callable[[AsyncIterator[REQ], RequestContext[Any, Any]], Awaitable[RES]],
        request: AsyncIterator[REQ],
        ctx: RequestContext[Any, Any],
    ) -> RES:
        try:
            return await call_next(request, ctx)
        except Exception as exc:
            raise connect_error(exc) from exc

    async def intercept_server_stream(
        self,
        call_next: Callable[[REQ, RequestContext[Any, Any]], AsyncIterator[RES]],
        request: REQ,
        ctx: RequestContext[Any, Any],
    ) -> AsyncIterator[RES]:
        try:
            async for item in call_next(request, ctx):
                yield item
        except Exception as exc:
            raise connect_error(exc) from exc
