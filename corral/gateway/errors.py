"""The one place where the gateway's errors become its envelope: ``{"error": "message"}``,
the shape of spec 000 ("the same shape as the rest of the API"), with its statuses:

    Unauthenticated                        401   missing or malformed credentials
    Forbidden                              403   a viewer's key (no ``sandbox:exec``)
    NotFound                               404   unknown, stopped or not-owned sandbox
    Unavailable                            503   the kill switch
    SandboxError (and subclasses)          502   the sandbox's server is not listening,
                                                 failed or sent garbage
    ExecTimeout                            504
    InvalidInput 400, Conflict 409, LimitExceeded 429, InsufficientStorage 507: waking
    a hibernated sandbox can fail so
    CorralError, anything unexpected       500   "internal error"

A 401 carries ``WWW-Authenticate: Bearer realm="corral"``. The gateway shares no code
with a surface's envelope: statuses and bodies are the same as the OpenComputer API's
for the same error, which the tests of both assert.
"""

from __future__ import annotations

import json

from corral.errors import (
    Conflict,
    CorralError,
    ExecTimeout,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    LimitExceeded,
    NotFound,
    SandboxError,
    Unauthenticated,
    Unavailable,
)

JSON = b"application/json"

STATUS: dict[type[CorralError], int] = {
    InvalidInput: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InsufficientStorage: 507,
    LimitExceeded: 429,
    Unavailable: 503,
    ExecTimeout: 504,
    SandboxError: 502,
    CorralError: 500,
}


def status_of(exc: CorralError) -> int:
    """The status of ``exc``: that of its nearest class in ``STATUS``."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def message_of(exc: CorralError) -> str:
    """What the client reads: ``"internal error"`` for a bare CorralError, else the
    message, led by the error's field when it has one and does not already name it
    (``"field: what"``)."""
    if type(exc) is CorralError:
        return "internal error"
    message, name = exc.message, exc.field
    if not name:
        return message
    for verb in (" must ", " is ", " are "):
        if message.startswith(name + verb):
            return f"{name}:{message[len(name) :]}"
    return message if message.startswith(name) else f"{name}: {message}"


def envelope(
    exc: CorralError, extra: list[tuple[bytes, bytes]]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers (``extra`` added; without ``Content-Length``) and body of the
    answer to ``exc``."""
    status = status_of(exc)
    headers = [(b"content-type", JSON), *extra]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="corral"'))
    return status, headers, json.dumps({"error": message_of(exc)}).encode()
