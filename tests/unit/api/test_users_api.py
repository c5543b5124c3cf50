"""/api/users: an org's members and roles over HTTP (corral.services.members): who may
list, add, change and remove, what each refusal says, and that a removed or demoted
user's token follows at once."""

from __future__ import annotations

from pathlib import Path

from corral.core import Core
from tests.unit.api.harness import new_key, serving


async def test_an_admin_adds_changes_and_removes_a_user_whose_token_follows(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        admin = {"X-API-Key": await new_key(app, "admin")}
        added = await client.post(
            "/api/users", json={"email": " Ada@Example.com", "role": "developer"}, headers=admin
        )
        assert added.status_code == 201, added.text
        user = added.json()
        assert (user["email"], user["role"], user["name"]) == ("ada@example.com", "developer", "")
        listed = (await client.get("/api/users", headers={"X-API-Key": await new_key(app, "viewer")})).json()
        assert [u["email"] for u in listed] == ["ada@example.com"]

        core: Core = app.state.core
        found = await core.auth.users.get(user["id"]) if core.auth.users else None
        assert found is not None
        bearer = {"Authorization": f"Bearer {core.auth.issue_user_token(found).token}"}
        assert (await client.post("/api/sandboxes", json={}, headers=bearer)).status_code == 201

        demoted = await client.put(f"/api/users/{user['id']}", json={"role": "viewer"}, headers=admin)
        assert demoted.status_code == 200 and demoted.json()["role"] == "viewer"
        refused = await client.post("/api/sandboxes", json={}, headers=bearer)
        assert refused.status_code == 403  # the token acts with the user's role now

        assert (await client.delete(f"/api/users/{user['id']}", headers=admin)).status_code == 204
        assert (await client.get("/api/me", headers=bearer)).status_code == 401
        kinds = [e["kind"] for e in (await client.get("/api/audit")).json()["events"]]
        assert kinds[:3] == ["user_removed", "user_role_changed", "sandbox_created"]
        assert "user_added" in kinds


async def test_refusals_name_what_is_wrong(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        admin = {"X-API-Key": await new_key(app, "admin")}
        developer = {"X-API-Key": await new_key(app, "developer")}
        bad = await client.post("/api/users", json={"email": "nope", "role": "viewer"}, headers=admin)
        assert bad.status_code == 400 and "email" in bad.json()["error"]
        bad = await client.post("/api/users", json={"email": "a@b.c", "role": "boss"}, headers=admin)
        assert bad.status_code == 400 and "role" in bad.json()["error"]
        above = await client.post("/api/users", json={"email": "a@b.c", "role": "owner"}, headers=admin)
        assert above.status_code == 403
        assert (
            await client.post("/api/users", json={"email": "a@b.c", "role": "viewer"}, headers=developer)
        ).status_code == 403
        assert (
            await client.post("/api/users", json={"email": "a@b.c", "role": "viewer"}, headers=admin)
        ).status_code == 201
        taken = await client.post("/api/users", json={"email": "A@b.c", "role": "viewer"}, headers=admin)
        assert taken.status_code == 409 and "email" in taken.json()["error"]
        owner = (await client.post("/api/users", json={"email": "o@b.c", "role": "owner"})).json()
        assert (
            await client.delete(f"/api/users/{owner['id']}", headers=admin)
        ).status_code == 403  # above an admin
        other = {"X-API-Key": await new_key(app, "owner", "other-org")}
        assert (await client.delete(f"/api/users/{owner['id']}", headers=other)).status_code == 404
        assert (await client.put("/api/users/usr-nope", json={"role": "viewer"})).status_code == 404

        core: Core = app.state.core
        made = (await client.post("/api/users", json={"email": "self@b.c", "role": "admin"})).json()
        found = await core.auth.users.get(made["id"]) if core.auth.users else None
        assert found is not None
        itself = {"Authorization": f"Bearer {core.auth.issue_user_token(found).token}"}
        refused = await client.delete(f"/api/users/{made['id']}", headers=itself)
        assert refused.status_code == 403 and "yourself" in refused.json()["error"]
