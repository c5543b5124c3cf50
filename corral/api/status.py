"""The HTTP status of each error of corral's error tree, and the message a client
reads: one table for every surface's envelope and the gateway's (each renders its own
body from these; ``corral.errors`` knows nothing of HTTP).

    InvalidInput 400 · Unauthenticated 401 · Forbidden 403 · NotFound 404 ·
    Conflict 409 · LimitExceeded 429 · InsufficientStorage 507 · Unavailable 503 ·
    ExecTimeout 504 · SandboxError (and subclasses) 502 · CorralError, anything else 500
"""

from __future__ import annotations

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


def message_of(exc: CorralError, field: str | None = None) -> str:
    """The message, naming the error's field (or ``field``, the surface's name for it)
    first when it has one: ``field: what``.

    ``"cpuCount must be between 1 and 4"`` becomes ``"cpuCount: must be between 1 and 4"``;
    a message that already starts with the field is kept; any other gets the prefix.
    """
    message, name = exc.message, field or exc.field
    if not name:
        return message
    for verb in (" must ", " is ", " are "):
        if message.startswith(name + verb):
            return f"{name}:{message[len(name) :]}"
    if message.startswith(name):
        return message
    return f"{name}: {message}"
