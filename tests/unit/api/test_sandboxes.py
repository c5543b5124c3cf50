"""Sandbox lifecycle, credentials and request validation on both mounts, in-process."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from tests.support.app import KEY
from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")

SANDBOX_FIELDS = {
    "sandboxID", "templateID", "status", "startedAt", "endAt", "cpuCount", "memoryMB",
    "diskMB", "metadata", "connectURL", "token", "sandboxDomain",
}  # fmt: skip


async def test_create_answers_the_spec_shape_and_ignores_unknown_fields(api: Api) -> None:
    body = {
        "templateID": "base",
        "timeout": 600,
        "cpuCount": 2,
        "memoryMB": 1024,
        "diskMB": 4096,
        "envs": {"GREETING": "hi"},
        "metadata": {"team": "a"},
        "burst": True,
        "secretStore": "s",
        "sandboxFamily": "f",
        "previewAuth": {"scheme": "bearer", "token": "auto"},
    }
    response = await api.client.post("/api/sandboxes", json=body)
    assert response.status_code == 201, response.text
    sb = response.json()
    assert set(sb) == SANDBOX_FIELDS | {"previewAuthToken"}  # asked for with previewAuth
    assert len(sb["previewAuthToken"]) >= 40
    assert sb["sandboxID"].startswith("sb-") and sb["status"] == "running"
    assert (sb["cpuCount"], sb["memoryMB"], sb["diskMB"]) == (2, 1024, 4096)
    assert sb["metadata"] == {"team": "a"} and sb["templateID"] == "base"
    assert sb["connectURL"] == api.settings.base_url
    assert sb["startedAt"].endswith("Z") and sb["endAt"].endswith("Z")
    claims = jwt.decode(sb["token"], options={"verify_signature": False})
    assert claims["sub"] == sb["sandboxID"]
    run = await api.client.post(
        f"/sandboxes/{sb['sandboxID']}/exec/run",
        json={"cmd": "sh", "args": ["-c", "echo $GREETING"]},
        headers={"Authorization": f"Bearer {sb['token']}", "X-API-Key": ""},
    )
    assert run.json()["stdout"] == "hi\n"
    assert (await api.client.delete(f"/api/sandboxes/{sb['sandboxID']}")).status_code == 204


async def test_create_with_no_body_uses_defaults(api: Api) -> None:
    response = await api.client.post("/api/sandboxes")
    assert response.status_code == 201, response.text
    sb = response.json()
    assert (sb["cpuCount"], sb["memoryMB"], sb["templateID"]) == (1, 512, "base")
    await api.client.delete(f"/api/sandboxes/{sb['sandboxID']}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"cpuCount": 9}, "cpuCount: must be between 1 and 4"),
        ({"cpuCount": 0}, "cpuCount: must be between 1 and 4"),
        ({"cpuCount": "2"}, "cpuCount: must be an integer"),
        ({"cpuCount": True}, "cpuCount: must be an integer"),
        ({"cpuCount": 1.5}, "cpuCount: must be an integer"),
        ({"memoryMB": 999999}, "memoryMB: must be between 64 and 2048"),
        ({"diskMB": 10**9}, "diskMB: must be between"),
        ({"timeout": -1}, "timeout: must be between 0 and"),
        ({"envs": {"A": 1}}, "envs.A: must be a string"),
        ({"envs": {"1BAD": "x"}}, "envs: invalid variable name"),
        ({"envs": ["A=1"]}, "envs: must be an object"),
        ({"metadata": "x"}, "metadata: must be an object"),
        ({"templateID": 5}, "templateID: must be a string"),
        ([1, 2], "request body must be a JSON object"),
    ],
)
async def test_create_rejects_bad_input_naming_the_field(api: Api, body: Any, message: str) -> None:
    response = await api.client.post("/api/sandboxes", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_unknown_template_is_404(api: Api) -> None:
    response = await api.client.post("/api/sandboxes", json={"templateID": "no-such-template"})
    assert response.status_code == 404
    assert "no-such-template" in response.json()["error"]


@pytest.mark.parametrize("content_type", ["application/json", None])
async def test_body_that_is_not_json_is_400(api: Api, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await api.client.post("/api/sandboxes", content=b"{not json", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("request body is not valid JSON")


async def test_list_get_and_kill(api: Api) -> None:
    created = (await api.client.post("/api/sandboxes", json={"timeout": 0})).json()
    sid = created["sandboxID"]
    assert created["endAt"] is None  # timeout 0: never stops by itself
    listed = (await api.client.get("/api/sandboxes")).json()
    assert {sid, api.sid} <= {sb["sandboxID"] for sb in listed}
    assert all(set(sb) == SANDBOX_FIELDS for sb in listed)

    control = (await api.client.get(f"/api/sandboxes/{sid}")).json()
    worker = await api.client.get(
        f"/sandboxes/{sid}", headers={"Authorization": f"Bearer {created['token']}"}
    )
    assert worker.status_code == 200
    assert {k: v for k, v in worker.json().items() if k != "token"} == {
        k: v for k, v in control.items() if k != "token"
    }

    assert (await api.client.delete(f"/api/sandboxes/{sid}")).status_code == 204
    assert (await api.client.get(f"/api/sandboxes/{sid}")).json()["status"] == "stopped"
    assert sid not in {sb["sandboxID"] for sb in (await api.client.get("/api/sandboxes")).json()}
    assert (await api.client.delete(f"/api/sandboxes/{sid}")).status_code == 204  # idempotent
    stopped = await api.client.post(f"/api/sandboxes/{sid}/exec/run", json={"cmd": "true"})
    assert stopped.status_code == 409 and "stopped" in stopped.json()["error"]


@pytest.mark.parametrize("bad_id", ["nope", "sb-0000000000000000", "SB-XYZ", "sb-..%2F..%2Fetc"])
async def test_unknown_or_malformed_sandbox_ids_are_404(api: Api, bad_id: str) -> None:
    for method, path, body in [
        ("GET", f"/api/sandboxes/{bad_id}", None),
        ("DELETE", f"/api/sandboxes/{bad_id}", None),
        ("POST", f"/api/sandboxes/{bad_id}/timeout", {"timeout": 5}),
        ("POST", f"/api/sandboxes/{bad_id}/exec/run", {"cmd": "true"}),
        ("GET", f"/api/sandboxes/{bad_id}/files?path=/etc/hostname", None),
        ("POST", f"/api/sandboxes/{bad_id}/pty", {}),
        ("GET", f"/api/sandboxes/{bad_id}/exec/ex-0000000000000000/result", None),
    ]:
        response = await api.client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert set(response.json()) == {"error"}


async def test_set_timeout_on_both_mounts(api: Api) -> None:
    for prefix, headers in [("/api", {}), ("", api.token)]:
        response = await api.client.post(
            f"{prefix}/sandboxes/{api.sid}/timeout", json={"timeout": 900}, headers=headers
        )
        assert response.status_code == 204, response.text
    assert (await api.client.get(f"/api/sandboxes/{api.sid}")).json()["endAt"] is not None
    for body, message in [
        ({}, "timeout: is required"),
        ({"timeout": "5"}, "timeout: must be an integer"),
        ({"timeout": -5}, "timeout: must be between 0"),
    ]:
        response = await api.client.post(f"/api/sandboxes/{api.sid}/timeout", json=body)
        assert response.status_code == 400 and message in response.json()["error"], response.text


async def test_token_refresh_is_a_worker_route(api: Api) -> None:
    response = await api.client.post(f"/sandboxes/{api.sid}/token/refresh", headers=api.token)
    assert response.status_code == 200
    token = response.json()["token"]
    fresh = {"Authorization": f"Bearer {token}", "X-API-Key": ""}
    assert (await api.client.get(f"/sandboxes/{api.sid}", headers=fresh)).status_code == 200
    assert (await api.client.post(f"/api/sandboxes/{api.sid}/token/refresh")).status_code == 404


async def test_control_plane_only_routes_are_not_on_the_worker_mount(api: Api) -> None:
    assert (await api.client.post("/sandboxes", json={}, headers=api.token)).status_code in (404, 405)
    assert (await api.client.delete(f"/sandboxes/{api.sid}", headers=api.token)).status_code == 405
    assert (await api.client.get(f"/api/sandboxes/{api.sid}")).json()["status"] == "running"


async def test_worker_token_reaches_only_its_own_sandbox(api: Api) -> None:
    other = (await api.client.post("/api/sandboxes", json={})).json()
    mine = {"Authorization": api.token["Authorization"], "X-API-Key": ""}
    try:
        for method, path, body in [
            ("GET", f"/sandboxes/{other['sandboxID']}", None),
            ("POST", f"/sandboxes/{other['sandboxID']}/exec/run", {"cmd": "true"}),
            ("GET", f"/sandboxes/{other['sandboxID']}/files/list?path=/", None),
            ("POST", f"/sandboxes/{other['sandboxID']}/token/refresh", None),
        ]:
            response = await api.client.request(method, path, json=body, headers=mine)
            assert response.status_code == 404, (method, path, response.text)
        for method, path, body in [  # the control plane is not a worker route, even for its own sandbox
            ("POST", f"/api/sandboxes/{other['sandboxID']}/timeout", {"timeout": 5}),
            ("GET", f"/api/sandboxes/{api.sid}", None),
            ("GET", "/api/sandboxes", None),
        ]:
            response = await api.client.request(method, path, json=body, headers=mine)
            assert response.status_code == 403 and "worker token" in response.text, (method, path)
    finally:
        await api.client.delete(f"/api/sandboxes/{other['sandboxID']}")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "X-API-Key"),
        ({"X-API-Key": "ek_nope_" + "x" * 32}, "invalid API key"),
        ({"X-API-Key": "ek_short"}, "ek_<id>_<secret>"),
        ({"X-API-Key": "hunter2"}, "API key (ek_<id>_<secret>) or a worker token"),
        ({"X-API-Key": f"Bearer {KEY}"}, "without 'Bearer '"),
        ({"Authorization": f"Basic {KEY}"}, "'Bearer <"),
        ({"Authorization": KEY}, "'Bearer <"),
        ({"Authorization": "Bearer a.b.c"}, "invalid token"),
    ],
)
async def test_bad_credentials_are_401_saying_the_expected_form(
    api: Api, headers: dict[str, str], expected: str
) -> None:
    response = await api.client.get("/api/sandboxes", headers={"X-API-Key": "", **headers})
    assert response.status_code == 401, response.text
    assert expected in response.json()["error"]
    assert "Bearer" in response.headers["www-authenticate"]


async def test_worker_mount_asks_for_a_bearer_token(api: Api) -> None:
    response = await api.client.get(f"/sandboxes/{api.sid}", headers={"X-API-Key": ""})
    assert response.status_code == 401
    assert "Authorization: Bearer <token>" in response.json()["error"]


async def test_expired_and_forged_tokens_are_401(api: Api) -> None:
    claims = jwt.decode(api.sandbox["token"], options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": 1}, api.core.auth.jwt_secret, algorithm="HS256")
    forged = jwt.encode(claims, "not-the-secret-" + "x" * 32, algorithm="HS256")
    for token, message in [(expired, "expired"), (forged, "invalid token")]:
        response = await api.client.get(
            f"/sandboxes/{api.sid}", headers={"Authorization": f"Bearer {token}", "X-API-Key": ""}
        )
        assert response.status_code == 401 and message in response.json()["error"]


async def test_credentials_are_recognised_by_form_on_either_mount(api: Api) -> None:
    as_bearer_key = {"Authorization": f"Bearer {KEY}", "X-API-Key": ""}
    jwt_as_api_key = {"X-API-Key": api.sandbox["token"]}  # the Python SDK's PTY does this
    assert (await api.client.get("/api/sandboxes", headers=as_bearer_key)).status_code == 200
    assert (await api.client.get(f"/sandboxes/{api.sid}", headers=jwt_as_api_key)).status_code == 200
    # a worker token is for its sandbox's worker routes: the control plane refuses it
    assert (await api.client.get(f"/api/sandboxes/{api.sid}", headers=jwt_as_api_key)).status_code == 403
    assert (await api.client.post("/api/sandboxes", json={}, headers=jwt_as_api_key)).status_code == 403


async def test_healthz_names_the_runtime(api: Api) -> None:
    response = await api.client.get("/healthz", headers={"X-API-Key": ""})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["runtime"]["name"] == "process" and body["version"]


async def test_openapi_documents_both_mounts(api: Api) -> None:
    spec = (await api.client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert "/api/sandboxes" in paths and "/sandboxes/{sandbox_id}/exec/run" in paths
    assert "/api/sandboxes/{sandbox_id}/files" in paths and "/sandboxes/{sandbox_id}/token/refresh" in paths
    assert "/sandboxes" not in paths
    props = spec["components"]["schemas"]["CreateSandboxBody"]["properties"]
    assert {"templateID", "cpuCount", "memoryMB", "diskMB", "envs", "metadata", "timeout"} <= set(props)
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
    assert (await api.client.get("/docs")).status_code == 200


async def test_unknown_routes_use_the_envelope(api: Api) -> None:
    response = await api.client.post(f"/api/sandboxes/{api.sid}/power-cycle")
    assert response.status_code == 404 and set(response.json()) == {"error"}
