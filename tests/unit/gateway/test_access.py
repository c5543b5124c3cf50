"""Who gets through the gateway: owner keys, worker tokens, preview tokens (header,
bearer, query, cookie), public previews; 401 and 404 as spec 000 says."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import KEY
from tests.support.sockets import refused_port
from tests.unit.gateway.conftest import Gw, start_app

pytestmark = pytest.mark.asyncio(loop_scope="module")
NOT_FOUND = {"error": "sandbox or port not found"}


async def test_the_owners_key_in_either_header(gw: Gw, client: httpx.AsyncClient) -> None:
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        response = await client.get(gw.url("/hello"), headers={**headers, **gw.host_header()})
        assert response.status_code == 200, response.text


async def test_the_owner_reaches_ports_without_a_preview(gw: Gw, client: httpx.AsyncClient) -> None:
    with refused_port() as port:
        response = await client.get(gw.path_url("/", port=port), headers={"X-API-Key": KEY})
    assert response.status_code == 502  # allowed through; nothing listens there


async def test_a_worker_token_of_the_sandbox(gw: Gw, client: httpx.AsyncClient) -> None:
    token = (await gw.api.get(f"/sandboxes/{gw.sid}")).json()["token"]
    seen = await client.get(gw.path_url("/headers"), headers={"Authorization": f"Bearer {token}"})
    assert seen.status_code == 200
    assert "authorization" not in {k.lower() for k, _ in seen.json()["headers"]}


async def test_404s_are_all_alike(gw: Gw, client: httpx.AsyncClient) -> None:
    """Another org's key, an unknown sandbox, a stopped one, malformed ids: one answer."""
    stopped = (await gw.api.post("/sandboxes", json={})).json()["sandboxID"]
    await gw.api.delete(f"/sandboxes/{stopped}")
    cases = [
        (gw.path_url("/hello"), {"X-API-Key": gw.server.other_key}),
        (gw.url("/hello"), {"X-API-Key": gw.server.other_key, **gw.host_header()}),
        (f"{gw.server.url}/preview/sb-0000000000000000/{gw.port}/hello", {"X-API-Key": KEY}),
        (f"{gw.server.url}/preview/{stopped}/{gw.port}/hello", {"X-API-Key": KEY}),
        (f"{gw.server.url}/preview/not-an-id/{gw.port}/", {"X-API-Key": KEY}),
        (f"{gw.server.url}/preview/{gw.sid}/99999/", {"X-API-Key": KEY}),
        (gw.url("/hello"), {"X-API-Key": KEY, "Host": f"0-{gw.sid}.localhost"}),
    ]
    for url, headers in cases:
        response = await client.get(url, headers=headers)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), (url, headers)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"X-API-Key": f"Bearer {KEY}"},
        {"X-API-Key": "ek_nosuchkey_" + "x" * 32},
        {"X-API-Key": "not-a-key"},
    ],
    ids=["none", "basic", "empty-bearer", "bearer-in-x-api-key", "unknown-key", "malformed-key"],
)
async def test_401_for_missing_or_bad_credentials(
    gw: Gw, client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    for url, extra in ((gw.url("/hello"), gw.host_header()), (gw.path_url("/hello"), {})):
        response = await client.get(url, headers={**headers, **extra})
        assert response.status_code == 401, response.text
        assert set(response.json()) == {"error"} and response.headers["www-authenticate"].startswith("Bearer")


async def test_401_without_credentials_whether_or_not_the_sandbox_exists(
    client: httpx.AsyncClient, gw: Gw
) -> None:
    unknown = await client.get(f"{gw.server.url}/preview/sb-0000000000000000/{gw.port}/")
    known = await client.get(gw.path_url("/"))
    assert unknown.status_code == known.status_code == 401 and unknown.json() == known.json()


async def test_the_preview_token_in_headers(gw: Gw, client: httpx.AsyncClient) -> None:
    for headers in (
        {"X-OC-Preview-Token": gw.preview_token},
        {"Authorization": f"Bearer {gw.preview_token}"},
    ):
        seen = await client.get(gw.url("/headers"), headers={**headers, **gw.host_header()})
        assert seen.status_code == 200, seen.text
        names = {k.lower() for k, _ in seen.json()["headers"]}
        assert not {"x-oc-preview-token", "authorization"} & names  # never shown to the sandbox


async def test_the_preview_token_as_query_then_cookie(gw: Gw, client: httpx.AsyncClient) -> None:
    first = await client.get(gw.url(f"/headers?a=1&token={gw.preview_token}&b=2"), headers=gw.host_header())
    assert first.status_code == 200
    assert first.json()["target"] == "/headers?a=1&b=2"  # the token is not passed on
    cookie = first.headers["set-cookie"]
    assert cookie.startswith(f"corral_preview_token={gw.preview_token};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Domain" not in cookie
    again = await client.get(
        gw.url("/headers"),
        headers={**gw.host_header(), "Cookie": f"x=1; corral_preview_token={gw.preview_token}"},
    )
    assert again.status_code == 200 and "set-cookie" not in again.headers
    assert dict(again.json()["headers"])["cookie"] == "x=1"
    by_path = await client.get(gw.path_url(f"/hello?token={gw.preview_token}"))
    assert by_path.status_code == 200 and "set-cookie" not in by_path.headers  # shared origin: no cookie


async def test_a_wrong_preview_token_is_401(gw: Gw, client: httpx.AsyncClient) -> None:
    for headers in ({"X-OC-Preview-Token": "x" * 43}, {"Cookie": "corral_preview_token=nope"}):
        response = await client.get(gw.url("/hello"), headers={**headers, **gw.host_header()})
        assert response.status_code == 401
    wrong = await client.get(gw.url("/hello?token=nope"), headers=gw.host_header())
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers


async def test_the_preview_token_needs_a_preview_of_the_port(gw: Gw, client: httpx.AsyncClient) -> None:
    with refused_port() as port:
        response = await client.get(
            gw.path_url("/", port=port), headers={"X-OC-Preview-Token": gw.preview_token}
        )
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


async def test_rotation_retires_the_old_token_at_once(gw: Gw, client: httpx.AsyncClient) -> None:
    created = await gw.api.post("/sandboxes", json={})  # without preview auth
    sid = created.json()["sandboxID"]
    assert created.json()["previewAuthToken"] == ""
    with refused_port() as port:
        await gw.api.post(f"/sandboxes/{sid}/preview", json={"port": port})
        url = f"{gw.server.url}/preview/{sid}/{port}/"
        first = (await gw.api.post(f"/sandboxes/{sid}/preview/rotate")).json()["previewAuthToken"]
        assert (
            await client.get(url, headers={"X-OC-Preview-Token": first})
        ).status_code == 502  # let through
        second = (await gw.api.post(f"/sandboxes/{sid}/preview/rotate")).json()["previewAuthToken"]
        assert first != second
        assert (await client.get(url, headers={"X-OC-Preview-Token": first})).status_code == 401
        assert (await client.get(url, headers={"X-OC-Preview-Token": second})).status_code == 502
    await gw.api.delete(f"/sandboxes/{sid}")


async def test_a_public_preview_needs_no_credentials(gw: Gw, client: httpx.AsyncClient) -> None:
    port = await start_app(gw.api, gw.server.url, gw.sid)
    public = await gw.api.post(
        f"/sandboxes/{gw.sid}/preview", json={"port": port, "authConfig": {"public": True}}
    )
    assert public.status_code == 201
    bare = await client.get(gw.path_url("/hello", port=port))
    assert (bare.status_code, bare.text) == (200, "hello from the sandbox")
    app_auth = await client.get(
        gw.path_url("/headers", port=port),
        headers={"Authorization": "Bearer the-apps-own-token", "X-API-Key": "ek_bad_key"},
    )
    assert app_auth.status_code == 200
    seen = dict(app_auth.json()["headers"])
    assert seen["authorization"] == "Bearer the-apps-own-token" and "x-api-key" not in seen
    owner = await client.get(gw.path_url("/headers", port=port), headers={"Authorization": f"Bearer {KEY}"})
    assert "authorization" not in dict(owner.json()["headers"])  # an owner's key never reaches the sandbox
    assert (await gw.api.delete(f"/sandboxes/{gw.sid}/preview/{port}")).status_code == 204
    assert (await client.get(gw.path_url("/hello", port=port))).status_code == 401
