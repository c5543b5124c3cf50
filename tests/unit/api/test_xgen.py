"""The xgen surface (spec 002) at /api/v1: the API key exchange and its envelope."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

from tests.support.app import KEY
from tests.unit.api.harness import new_key, serving


async def test_a_key_becomes_a_15_minute_token_that_works_on_every_surface(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        viewer = await new_key(app, "viewer")
        r = await client.post("/api/v1/auth/token", json={"api_key": viewer}, headers={"X-API-Key": ""})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"token", "expires_at", "expires_in"} and body["expires_in"] == 900
        claims = jwt.decode(body["token"], options={"verify_signature": False})
        assert claims["exp"] - int(time.time()) in range(890, 901)
        assert claims["role"] == "viewer" and claims["kid"] == viewer.split("_")[1]
        bearer = {"X-API-Key": "", "Authorization": f"Bearer {body['token']}"}
        assert (await client.get("/api/sandboxes", headers=bearer)).status_code == 200
        assert (await client.post("/api/sandboxes", json={}, headers=bearer)).status_code == 403


async def test_errors_use_the_xgen_envelope(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        cases = [
            ({"json": {}}, 401, "UNAUTHORIZED"),
            ({"json": {"api_key": KEY[:-1] + "Z"}}, 401, "UNAUTHORIZED"),
            ({"json": {"api_key": 12}}, 400, "INVALID_PARAMETER"),  # a field of the wrong type
            (
                {"content": b"{not json", "headers": {"content-type": "application/json"}},
                400,
                "INVALID_REQUEST",
            ),
        ]
        for kwargs, status, code in cases:
            r = await client.post("/api/v1/auth/token", **kwargs)  # type: ignore[arg-type]
            assert (r.status_code, r.json()["code"]) == (status, code), r.text
            assert set(r.json()) == {"error", "code", "details"} and r.json()["error"]
        unknown = await client.get("/api/v1/nothing-here")
        assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
        anonymous = await client.get("/api/v1/sandboxes")
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "UNAUTHORIZED")
        assert "/auth/token" in (await client.get("/api/v1/openapi.json")).json()["paths"]
        assert "error" in (await client.get("/api/nope")).json()  # the OpenComputer envelope stays its own
