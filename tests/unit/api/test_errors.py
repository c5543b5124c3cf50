"""The OpenComputer envelope: statuses, messages, and no tracebacks, for every error."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from corral.api.opencomputer import errors
from corral.api.status import message_of, status_of
from corral.errors import (
    AgentError,
    Conflict,
    CorralError,
    ExecTimeout,
    Forbidden,
    InsufficientStorage,
    InvalidInput,
    LimitExceeded,
    NotFound,
    RuntimeFailure,
    SandboxError,
    Unauthenticated,
    Unavailable,
)

CASES: list[tuple[CorralError, int]] = [
    (InvalidInput("cpuCount must be between 1 and 4", field="cpuCount"), 400),
    (Unauthenticated("invalid API key"), 401),
    (Forbidden("viewers cannot create sandboxes"), 403),
    (NotFound("sandbox sb-x not found"), 404),
    (Conflict("sandbox sb-x is stopped"), 409),
    (LimitExceeded("too many sandboxes"), 429),
    (InsufficientStorage("/root/big: No space left on device"), 507),
    (Unavailable("hibernation is not available"), 503),
    (ExecTimeout("the agent did not answer"), 504),
    (SandboxError("the sandbox failed"), 502),
    (RuntimeFailure("runc exploded"), 502),
    (AgentError("the agent sent garbage"), 502),
    (CorralError("a bug"), 500),
]


@pytest.mark.parametrize(("exc", "status"), CASES, ids=[type(e).__name__ + str(s) for e, s in CASES])
def test_status_of(exc: CorralError, status: int) -> None:
    assert status_of(exc) == status


def test_message_names_the_field_with_a_colon() -> None:
    assert message_of(InvalidInput("cpuCount must be between 1 and 4", field="cpuCount")) == (
        "cpuCount: must be between 1 and 4"
    )
    assert message_of(InvalidInput("envs: at most 256 variables", field="envs")) == (
        "envs: at most 256 variables"
    )
    assert message_of(NotFound("sandbox sb-x not found")) == "sandbox sb-x not found"
    assert message_of(InvalidInput("path is required", field="path")) == "path: is required"
    assert message_of(InvalidInput("refusing to remove /", field="path")) == "path: refusing to remove /"
    assert message_of(InvalidInput("envs.A: invalid value", field="envs")) == "envs.A: invalid value"
    assert message_of(InvalidInput("cols and rows must be small", field="cols")) == (
        "cols and rows must be small"
    )


def test_describe_validation_errors() -> None:
    found = errors.describe(
        [
            {"type": "int_type", "loc": ("body", "cpuCount"), "msg": "Input should be a valid integer"},
            {"type": "string_type", "loc": ("body", "args", 1), "msg": "x"},
            {"type": "string_type", "loc": ("body", "envs", "A"), "msg": "x"},
            {"type": "missing", "loc": ("query", "path"), "msg": "Field required"},
            {"type": "model_type", "loc": ("body",), "msg": "x"},
            {"type": "json_invalid", "loc": ("body", 1), "msg": "x", "ctx": {"error": "Expecting value"}},
        ]
    )
    assert found.split("; ") == [
        "cpuCount: must be an integer",
        "args[1]: must be a string",
        "envs.A: must be a string",
        "path: is required",
        "request body must be a JSON object",
        "request body is not valid JSON: Expecting value",
    ]


class Body(BaseModel):
    n: int


def _app() -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.get("/raise/{index}")
    async def raise_case(index: int) -> None:
        raise CASES[index][0]

    @app.get("/bug")
    async def bug() -> None:
        raise RuntimeError("secret detail that must not leak")

    @app.post("/body")
    async def body(b: Body) -> dict[str, int]:
        return {"n": b.n}

    return app


async def test_every_error_renders_the_envelope() -> None:
    transport = httpx.ASGITransport(_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for index, (exc, status) in enumerate(CASES):
            response = await client.get(f"/raise/{index}")
            assert response.status_code == status
            body = response.json()
            assert set(body) == {"error"}
            expected = "internal error" if type(exc) is CorralError else message_of(exc)
            assert body["error"] == expected
        assert (await client.get("/raise/0")).json() == {"error": "cpuCount: must be between 1 and 4"}
        unauth = await client.get("/raise/1")
        assert unauth.headers["www-authenticate"].startswith("Bearer")

        bug = await client.get("/bug")
        assert bug.status_code == 500
        assert bug.json() == {"error": "internal error"}
        assert "secret" not in bug.text and "Traceback" not in bug.text

        missing = await client.get("/nowhere")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        wrong_method = await client.delete("/bug")
        assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"error"}

        invalid = await client.post("/body", json={"n": "x"})
        assert invalid.status_code == 400
        assert invalid.json() == {"error": "n: must be an integer"}
