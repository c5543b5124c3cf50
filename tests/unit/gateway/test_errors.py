"""The gateway's envelope answers an error as the OpenComputer API does (spec 000:
"the same shape as the rest of the API"), from a module of its own."""

from __future__ import annotations

import json

import pytest

from corral.api import status as api
from corral.errors import AgentError, CorralError, InvalidInput, RuntimeFailure
from corral.gateway import errors as gateway

ERRORS = [cls("went wrong") for cls in (*api.STATUS, RuntimeFailure, AgentError)] + [
    InvalidInput("must be positive", field="port"),
    InvalidInput("port is too large", field="port"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: f"{type(e).__name__}:{e.field}")
def test_same_status_and_message_as_the_api(exc: CorralError) -> None:
    status, headers, body = gateway.envelope(exc, [(b"vary", b"origin")])
    assert status == api.status_of(exc)
    message = "internal error" if type(exc) is CorralError else api.message_of(exc)
    assert json.loads(body) == {"error": message}
    assert (b"vary", b"origin") in headers
    assert ((b"www-authenticate", b'Bearer realm="corral"') in headers) == (status == 401)
