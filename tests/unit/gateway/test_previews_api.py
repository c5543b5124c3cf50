"""The preview URL routes of the OpenComputer surface, ``previewAuth`` on create, open
ports, and the real OpenComputer Python SDK's preview calls."""

from __future__ import annotations

import pytest
from opencomputer import Sandbox  # type: ignore[import-untyped]

from tests.support.app import KEY
from tests.unit.gateway.conftest import Gw

pytestmark = pytest.mark.asyncio(loop_scope="module")
PREVIEW_FIELDS = {"id", "sandboxId", "hostname", "port", "sslStatus", "createdAt", "url"}


async def test_create_list_delete(gw: Gw) -> None:
    port = 3001  # no server: only its number matters (below the ephemeral ports, so not gw.port)
    created = await gw.api.post(f"/sandboxes/{gw.sid}/preview", json={"port": port, "authConfig": {}})
    assert created.status_code == 201, created.text
    pv = created.json()
    assert set(pv) == PREVIEW_FIELDS and pv["id"].startswith("pv-")
    assert (pv["sandboxId"], pv["port"], pv["sslStatus"]) == (gw.sid, port, "none")
    assert pv["hostname"] == f"{gw.sid}-p{port}.localhost"
    assert pv["url"] == f"http://{gw.sid}-p{port}.localhost:{gw.server.port}/"
    assert pv["createdAt"].endswith("Z")
    again = await gw.api.post(f"/sandboxes/{gw.sid}/preview", json={"port": port})
    assert (again.status_code, again.json()["id"]) == (200, pv["id"])  # idempotent
    clash = await gw.api.post(
        f"/sandboxes/{gw.sid}/preview", json={"port": port, "authConfig": {"public": True}}
    )
    assert clash.status_code == 409
    listed = (await gw.api.get(f"/sandboxes/{gw.sid}/preview")).json()
    assert pv["id"] in {p["id"] for p in listed} and gw.port in {p["port"] for p in listed}
    assert (await gw.api.delete(f"/sandboxes/{gw.sid}/preview/{port}")).status_code == 204
    assert (await gw.api.delete(f"/sandboxes/{gw.sid}/preview/{port}")).status_code == 404
    assert port not in {p["port"] for p in (await gw.api.get(f"/sandboxes/{gw.sid}/preview")).json()}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"port": "80"}, "port"),
        ({}, "port"),
        ({"port": 8000, "domain": "evil.example"}, "domain"),
        ({"port": 8000, "authConfig": {"public": "yes"}}, "authConfig.public"),
    ],
)
async def test_bad_requests_name_the_field(gw: Gw, body: dict[str, object], field: str) -> None:
    response = await gw.api.post(f"/sandboxes/{gw.sid}/preview", json=body)
    assert response.status_code == 400 and response.json()["error"].startswith(field), response.text


async def test_a_custom_domain_of_the_gateway(gw: Gw) -> None:
    port = 3002  # no server: only its number matters (below the ephemeral ports, so not gw.port)
    response = await gw.api.post(
        f"/sandboxes/{gw.sid}/preview", json={"port": port, "domain": "Preview.Test"}
    )
    assert response.status_code == 201
    assert response.json()["hostname"] == f"{gw.sid}-p{port}.preview.test"
    await gw.api.delete(f"/sandboxes/{gw.sid}/preview/{port}")


async def test_previews_are_per_org_and_need_a_running_sandbox(gw: Gw) -> None:
    other = {"X-API-Key": gw.server.other_key}
    response = await gw.api.get(f"/sandboxes/{gw.sid}/preview", headers=other)
    assert response.status_code == 404
    stopped = (await gw.api.post("/sandboxes", json={})).json()["sandboxID"]
    await gw.api.delete(f"/sandboxes/{stopped}")
    assert (await gw.api.post(f"/sandboxes/{stopped}/preview", json={"port": 80})).status_code == 409
    assert (await gw.api.post(f"/sandboxes/{stopped}/preview/rotate")).status_code == 409


@pytest.mark.parametrize(
    ("auth", "status", "field"),
    [
        ({"scheme": "bearer", "token": "short"}, 400, "previewAuth.token"),
        ({"token": "has space in it, long"}, 400, "previewAuth.token"),
        ({"scheme": "basic", "token": "auto"}, 400, "previewAuth.scheme"),
        ({"token": 5}, 400, "previewAuth.token"),
    ],
)
async def test_preview_auth_on_create_is_checked(
    gw: Gw, auth: dict[str, object], status: int, field: str
) -> None:
    response = await gw.api.post("/sandboxes", json={"previewAuth": auth})
    assert response.status_code == status and response.json()["error"].startswith(field), response.text


async def test_an_explicit_preview_token_is_returned_once(gw: Gw) -> None:
    token = "my-own-token-0123456789"
    created = await gw.api.post("/sandboxes", json={"previewAuth": {"token": token}})
    sid = created.json()["sandboxID"]
    assert created.json()["previewAuthToken"] == token
    assert "previewAuthToken" not in (await gw.api.get(f"/sandboxes/{sid}")).json()
    await gw.api.delete(f"/sandboxes/{sid}")


async def test_open_ports(gw: Gw) -> None:
    for base in (gw.api, None):
        url = f"/sandboxes/{gw.sid}/ports"
        response = await (gw.api.get(url) if base else gw.api.get(f"{gw.server.url}{url}"))
        assert response.status_code == 200, response.text
        ports = {p["port"]: p for p in response.json()}
        assert gw.port in ports  # the sandbox's server listens there
        mine = ports[gw.port]
        assert mine["previewId"].startswith("pv-")
        assert mine["url"] == f"http://{gw.sid}-p{gw.port}.localhost:{gw.server.port}/"


async def test_the_python_sdk(gw: Gw) -> None:
    sandbox = await Sandbox.create(api_url=gw.server.url, api_key=KEY, preview_auth={"token": "auto"})
    try:
        assert len(sandbox.preview_auth_token) >= 40
        port = 3003  # no server: only its number matters (below the ephemeral ports, so not gw.port)
        created = await sandbox.create_preview_url(port)
        assert created["port"] == port and created["sandboxId"] == sandbox.id
        assert [p["port"] for p in await sandbox.list_preview_urls()] == [port]
        old = sandbox.preview_auth_token
        new = await sandbox.rotate_preview_auth_token()
        assert new != old and sandbox.preview_auth_token == new
        await sandbox.delete_preview_url(port)
        await sandbox.delete_preview_url(port)  # the SDK takes the 404 of a second delete
        assert await sandbox.list_preview_urls() == []
    finally:
        await sandbox.kill()
        await sandbox.close()
