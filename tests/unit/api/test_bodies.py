"""Request bodies are JSON whatever type they declare (``corral.api.bodies``), on every
surface: the README's ``curl -d`` sends a form type, some clients none, ``fetch`` a
string as text/plain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.api.bodies import as_json
from tests.support.app import KEY
from tests.unit.api.harness import serving


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], [(b"content-type", b"application/json")]),
        ([(b"Content-Type", b"application/x-www-form-urlencoded")], [(b"content-type", b"application/json")]),
        ([(b"content-type", b"text/plain;charset=UTF-8")], [(b"content-type", b"application/json")]),
        ([(b"content-type", b"application/json")], [(b"content-type", b"application/json")]),
        ([(b"content-type", b"application/octet-stream")], None),
        ([(b"content-type", b"multipart/form-data; boundary=x")], None),
        ([(b"content-type", b"text/plain"), (b"content-type", b"text/plain")], None),
    ],
)
def test_as_json(headers: list[tuple[bytes, bytes]], expected: list[tuple[bytes, bytes]] | None) -> None:
    changed = as_json(headers)
    if expected is None or expected == headers:
        assert changed is None or changed == expected
    else:
        assert changed == expected


async def test_json_bodies_of_any_declared_type_work_on_every_surface(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        body = json.dumps({"metadata": {"via": "curl"}})
        for content_type in ("application/x-www-form-urlencoded", None, "text/plain"):
            headers = {"content-type": content_type} if content_type else {}
            created = await client.post("/api/sandboxes", content=body, headers=headers)
            assert created.status_code == 201, (content_type, created.text)
            assert created.json()["metadata"] == {"via": "curl"}
            token = await client.post(
                "/api/v1/auth/token", content=json.dumps({"api_key": KEY}), headers=headers
            )
            assert token.status_code == 200, (content_type, token.text)
        form = await client.post(
            "/api/sandboxes",
            content=b"cpuCount=2",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 400 and form.json()["error"].startswith("request body is not valid JSON")
        raw = await client.post(
            "/api/sandboxes", content=body, headers={"content-type": "application/octet-stream"}
        )
        assert raw.status_code == 400  # a type that says "not JSON" is taken at its word


async def test_text_with_a_lone_surrogate_is_a_400_naming_its_field(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        before = len((await client.get("/api/sandboxes")).json())
        json_type = {"content-type": "application/json"}
        for body, field in [
            (b'{"metadata": {"k": "\\ud800"}}', "metadata"),
            (b'{"envs": {"\\udfff": "x"}}', "envs"),
            (b'{"templateID": "base\\udc80"}', "templateID"),
        ]:
            answer = await client.post("/api/sandboxes", content=body, headers=json_type)
            assert answer.status_code == 400, answer.text
            assert answer.json()["error"].startswith(f"{field}: must be text without lone surrogates")
        paired = await client.post(
            "/api/sandboxes", content=b'{"metadata": {"k": "\\ud83d\\ude00"}}', headers=json_type
        )
        assert paired.status_code == 201 and paired.json()["metadata"] == {"k": "\U0001f600"}
        listed = await client.get("/api/sandboxes")
        assert listed.status_code == 200 and len(listed.json()) == before + 1
        token = await client.post("/api/v1/auth/token", content=b'{"api_key": "\\ud800"}', headers=json_type)
        assert token.status_code == 400 and token.json()["code"] == "INVALID_PARAMETER"
        assert token.json()["details"] == "api_key"
        assert token.json()["error"].startswith("api_key: must be text")
