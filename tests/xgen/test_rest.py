"""The xgen REST routes through a real server on runc, with the protocol's client."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.xgen_client import XgenClient, XgenError
from tests.xgen.conftest import Org, Server

pytestmark = pytest.mark.integration


def moment(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


async def test_token_exchange_and_its_expiry(xgen: Server, alpha: Org) -> None:
    async with httpx.AsyncClient(base_url=f"{xgen.url}/api/v1") as http:
        answer = await http.post("/auth/token", json={"api_key": alpha.key})
        assert answer.status_code == 200
        body = answer.json()
        left = (moment(body["expires_at"]) - datetime.now(UTC)).total_seconds()
        assert 850 < left <= 900
        token = body["token"]
        assert (await http.get("/sandboxes", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (
            await http.get("/sandboxes", headers={"Authorization": f"ApiKey {alpha.key}"})
        ).status_code == 200
        for credential in (
            xgen.resigned(token, expires_in=-5),
            xgen.resigned(token, secret="f" * 64),
            "x.y.z",
        ):
            refused = await http.get("/sandboxes", headers={"Authorization": f"Bearer {credential}"})
            assert refused.status_code == 401
            assert refused.json()["code"] == "UNAUTHORIZED"
        missing = await http.get("/sandboxes")
        assert (missing.status_code, missing.json()["code"]) == (401, "UNAUTHORIZED")
        wrong = await http.post("/auth/token", json={"api_key": "ek_nope_nope"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "UNAUTHORIZED")
        query = await http.get(f"/sandboxes?token={token}")  # ?token= is the WebSocket's only
        assert query.status_code == 401


async def test_create_poll_get_list_keepalive_services_delete(client: XgenClient) -> None:
    created = await client.create(
        "base", ports=[3000, 8080], metadata={"user": "alice"}, env={"GREETING": "hi"}
    )
    sandbox_id = created["id"]
    try:
        assert created["status"] in ("starting", "running")
        for key in ("id", "status", "template", "ws_url", "created_at", "expires_at"):
            assert created[key], key
        assert created["template"] == "base"
        assert created["ws_url"].endswith(f"/api/v1/sandboxes/{sandbox_id}/ws")
        assert set(created["preview_urls"]) == {"3000", "8080"}
        assert f"sbx-{sandbox_id}-3000." in created["preview_urls"]["3000"]
        assert created["metadata"] == {"user": "alice"}
        assert "vnc_url" not in created
        lifetime = (moment(created["expires_at"]) - moment(created["created_at"])).total_seconds()
        assert 3590 <= lifetime <= 3610

        running = await client.wait_running(sandbox_id)
        assert running["id"] == sandbox_id
        assert sandbox_id in [sb["id"] for sb in await client.list()]

        ran = await client.exec(sandbox_id, "id -u; pwd; echo $GREETING; echo oops >&2; exit 3")
        assert ran == {"exit_code": 3, "stdout": "1000\n/home/sandbox/workspace\nhi\n", "stderr": "oops\n"}
        node = await client.exec(sandbox_id, "echo $FOO", env={"FOO": "bar"}, cwd="/tmp")
        assert node["stdout"] == "bar\n"

        with pytest.raises(XgenError) as timeout:
            await client.exec(sandbox_id, "sleep 30", timeout_seconds=1)
        assert (timeout.value.status, timeout.value.code) == (504, "EXEC_TIMEOUT")

        before = moment((await client.get(sandbox_id))["expires_at"])
        await client.keepalive(sandbox_id)
        after = moment((await client.get(sandbox_id))["expires_at"])
        assert after >= before
        assert abs((after - datetime.now(UTC)).total_seconds() - 3600) < 30

        services = {s["port"]: s["preview_url"] for s in await client.services(sandbox_id)}
        assert {3000, 8080} <= set(services)
        assert f"sbx-{sandbox_id}-8080." in services[8080]
    finally:
        await client.delete(sandbox_id)
    gone = await client.get(sandbox_id)
    assert gone["status"] == "stopped"
    assert sandbox_id not in [sb["id"] for sb in await client.list()]
    await client.delete(sandbox_id)  # 204 again


async def test_the_lifetime_ends_the_sandbox_whatever_its_use(alpha: Org) -> None:
    async with alpha.client("admin") as client:  # its own rate-limit bucket
        created = await client.create("base", timeout_seconds=3)
        sandbox_id = created["id"]
        lifetime = (moment(created["expires_at"]) - moment(created["created_at"])).total_seconds()
        assert 2 <= lifetime <= 4
        deadline = time.monotonic() + 30
        while (await client.get(sandbox_id))["status"] == "running":  # kept in use meanwhile
            try:
                assert (await client.exec(sandbox_id, "true"))["exit_code"] == 0
            except XgenError as ended:  # its deadline came between the two requests
                assert ended.status == 409
            assert time.monotonic() < deadline, "still running 30 s after a 3 s lifetime"
            await asyncio.sleep(0.5)  # the SDKs' poll, at twice their pace
        with pytest.raises(XgenError) as over:
            await client.exec(sandbox_id, "true")
        assert (over.value.status, over.value.code) == (409, "SANDBOX_NOT_READY")


async def test_unknown_other_org_and_viewer(client: XgenClient, alpha: Org, beta: Org, sandbox: str) -> None:
    for missing in ("sb-doesnotexist", "nothing"):
        with pytest.raises(XgenError) as unknown:
            await client.get(missing)
        assert (unknown.value.status, unknown.value.code) == (404, "SANDBOX_NOT_FOUND")
    await client.delete("sb-doesnotexist")  # 204 for an unknown id
    async with beta.client() as other:
        for call in (other.get(sandbox), other.exec(sandbox, "true"), other.keepalive(sandbox)):
            with pytest.raises(XgenError) as hidden:
                await call
            assert (hidden.value.status, hidden.value.code) == (404, "SANDBOX_NOT_FOUND")
        assert sandbox not in [sb["id"] for sb in await other.list()]
    async with alpha.client("viewer") as viewer:
        assert (await viewer.get(sandbox))["id"] == sandbox
        for call in (
            viewer.create("base"),
            viewer.exec(sandbox, "true"),
            viewer.delete(sandbox),
            viewer.keepalive(sandbox),
        ):
            with pytest.raises(XgenError) as denied:
                await call
            assert (denied.value.status, denied.value.code) == (403, "FORBIDDEN")
    assert (await client.get(sandbox))["status"] == "running"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template": "cobol"}, "template"),
        ({"template": "nodejs", "gui": True}, "gui"),  # the desktop comes with base and gui
        ({"ports": [0]}, "ports"),
        ({"ports": [70000]}, "ports"),
        ({"ports": [3000, 3000]}, "ports"),
        ({"metadata": {f"k{i}": "v" for i in range(21)}}, "metadata"),
        ({"metadata": {"k" * 200: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 5000}}, "metadata"),
        ({"capabilities": ["root"]}, "capabilities"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": 86401}, "timeout_seconds"),
        ({"timeout_seconds": "60"}, "timeout_seconds"),
        ({"resources": {"memory": "lots"}}, "resources.memory"),
    ],
)
async def test_bad_create_is_400_naming_the_field(
    client: XgenClient, body: dict[str, object], field: str
) -> None:
    with pytest.raises(XgenError) as bad:
        await client.request("POST", "/sandboxes", 201, json={"template": "base", **body})
    assert (bad.value.status, bad.value.code, bad.value.details) == (400, "INVALID_PARAMETER", field)


async def test_every_error_has_the_envelope(xgen: Server, alpha: Org) -> None:
    async with httpx.AsyncClient(base_url=f"{xgen.url}/api/v1") as http:
        answer = await http.post(
            "/sandboxes", content=b"{not json", headers={"Authorization": f"ApiKey {alpha.key}"}
        )
        assert answer.status_code == 400
        assert set(answer.json()) == {"error", "code", "details"}
        assert answer.json()["code"] == "INVALID_REQUEST"


async def test_rate_limit_is_429_in_the_envelope(xgen: Server, alpha: Org) -> None:
    key = alpha.key_of("developer")
    async with httpx.AsyncClient(base_url=f"{xgen.url}/api/v1") as http:
        headers = {"Authorization": f"ApiKey {key}"}
        statuses = [(await http.get("/sandboxes", headers=headers)) for _ in range(130)]
    limited = [a for a in statuses if a.status_code == 429]
    assert limited, "no 429 within 130 requests"
    assert limited[0].json()["code"] == "QUOTA_EXCEEDED"
    assert "retry-after" in limited[0].headers
