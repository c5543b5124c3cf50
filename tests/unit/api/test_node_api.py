"""GET /api/me and GET /api/node: who the caller is, and the node's figures (what the
console's header, buttons and health charts read)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from corral.core import Core
from corral.domain import User
from corral.ids import new_id
from corral.services.node_stats import host_memory_mb
from tests.unit.api.harness import new_key, serving


async def test_me_names_the_org_role_and_scopes_of_a_key_and_a_user(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        viewer = await new_key(app, "viewer", "acme")
        me = (await client.get("/api/me", headers={"X-API-Key": viewer})).json()
        assert (me["orgName"], me["role"], me["scopes"]) == (
            "acme",
            "viewer",
            ["sandbox:read", "sessions:read"],
        )
        assert me["keyID"] == viewer.split("_")[1] and me["email"] is None

        core: Core = app.state.core
        org = await core.auth.keys.org_by_name("acme")
        user = User(new_id("usr"), org.id, "ada@example.com", "Ada", "developer", datetime.now(UTC))
        assert core.auth.users is not None
        await core.auth.users.add(user)
        token = core.auth.issue_user_token(user).token
        me = (await client.get("/api/me", headers={"Authorization": f"Bearer {token}"})).json()
        assert (me["email"], me["userID"], me["role"]) == ("ada@example.com", user.id, "developer")
        assert "sandbox:create" in me["scopes"] and "keys:manage" not in me["scopes"]

        assert (await client.get("/api/me", headers={"X-API-Key": "ek_nope_nope"})).status_code == 401


async def test_node_counts_creates_and_live_sandboxes(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        before = (await client.get("/api/node")).json()
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        after = (await client.get("/api/node")).json()
        assert after["creates"] == before["creates"] + 1
        assert after["createSecondsCount"] == before["createSecondsCount"] + 1
        assert after["createSecondsSum"] > before["createSecondsSum"]
        assert after["liveSandboxes"] == before["liveSandboxes"] + 1
        assert after["memoryPromisedMB"] > before["memoryPromisedMB"]
        assert after["at"] >= before["at"]
        await client.delete(f"/api/sandboxes/{sid}")
        assert (await client.get("/api/node")).json()["liveSandboxes"] == before["liveSandboxes"]
        viewer = await new_key(app, "viewer")
        assert (await client.get("/api/node", headers={"X-API-Key": viewer})).status_code == 200


def test_host_memory_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       2048000 kB\nMemFree: 1 kB\nMemAvailable:   1024000 kB\n")
    assert host_memory_mb(meminfo) == (2000, 1000)
    assert host_memory_mb(tmp_path / "missing") == (0, 0)
