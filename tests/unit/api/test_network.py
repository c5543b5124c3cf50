"""Egress policy routes: set on create in both shapes, read back, changed, validated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def create(api: Api, **body: Any) -> str:
    response = await api.client.post("/api/sandboxes", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["sandboxID"])


async def test_enclave_shape_on_create_reads_back(api: Api) -> None:
    sid = await create(api, egress={"mode": "deny_all", "allow": ["10.1.0.0/16", "*.example.com"]})
    got = (await api.client.get(f"/api/sandboxes/{sid}/allowed-hosts")).json()
    assert got == {
        "sandboxID": sid,
        "egressAllowlist": ["10.1.0.0/16", "*.example.com"],
        "egress": {"mode": "deny_all", "allow": ["10.1.0.0/16", "*.example.com"], "deny": []},
    }


async def test_allowed_hosts_shape_means_deny_all_but_these(api: Api) -> None:
    sid = await create(api, allowedHosts=["pypi.org"])
    got = (await api.client.get(f"/api/sandboxes/{sid}/allowed-hosts")).json()
    assert got["egress"] == {"mode": "deny_all", "allow": ["pypi.org"], "deny": []}


async def test_default_is_allow_all_and_put_changes_it(api: Api) -> None:
    sid = await create(api)
    assert (await api.client.get(f"/api/sandboxes/{sid}/allowed-hosts")).json()["egress"][
        "mode"
    ] == "allow_all"
    put = await api.client.put(
        f"/api/sandboxes/{sid}/network", json={"mode": "allow_all", "deny": ["1.2.3.4/32"]}
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"mode": "allow_all", "allow": [], "deny": ["1.2.3.4/32"]}
    nested = await api.client.put(f"/api/sandboxes/{sid}/network", json={"egress": {"mode": "deny_all"}})
    assert nested.json()["mode"] == "deny_all"
    got = (await api.client.get(f"/api/sandboxes/{sid}/allowed-hosts")).json()
    assert got["egress"] == {"mode": "deny_all", "allow": [], "deny": []}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"egress": {"mode": "sometimes"}}, "egress"),
        ({"egress": {"mode": "deny_all", "allow": ["10.0.0.0/33"]}}, "egress.allow[0]"),
        ({"egress": {"allow": [""]}}, "egress.allow[0]"),
        ({"allowedHosts": ["ok.example.com", "bad host"]}, "allowedHosts.allow[1]"),
    ],
)
async def test_malformed_policy_is_400_naming_the_entry(api: Api, body: dict[str, Any], needle: str) -> None:
    response = await api.client.post("/api/sandboxes", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


async def test_put_bad_entry_is_400_and_unknown_sandbox_404(api: Api) -> None:
    sid = await create(api)
    bad = await api.client.put(
        f"/api/sandboxes/{sid}/network", json={"mode": "deny_all", "allow": ["300.1.1.1"]}
    )
    assert bad.status_code == 400 and "egress.allow[0]" in bad.json()["error"]
    missing = await api.client.put("/api/sandboxes/sb-nope0000000000/network", json={"mode": "deny_all"})
    assert missing.status_code == 404
