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

A 401 carries ``WWW-Authenticate: Bearer realm="corral"``. The statuses and messages
are ``corral.api.status``'s, as every surface's: the gateway imports no surface, and
its bodies are the OpenComputer API's for the same error, which the tests assert.
"""

from __future__ import annotations

import json

from corral.api.status import message_of, status_of
from corral.errors import CorralError

JSON = b"application/json"


def envelope(
    exc: CorralError, extra: list[tuple[bytes, bytes]]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The status, headers (``extra`` added; without ``Content-Length``) and body of the
    answer to ``exc``."""
    status = status_of(exc)
    headers = [(b"content-type", JSON), *extra]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="corral"'))
    message = "internal error" if type(exc) is CorralError else message_of(exc)
    return status, headers, json.dumps({"error": message}).encode()
