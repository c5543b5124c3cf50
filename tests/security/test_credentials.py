"""Credentials carry exactly the scopes of their purpose, and die with what issued them.

A worker token (the ``token`` of a create) is for its own sandbox's worker routes
(``/sandboxes/<id>/...``) and nothing else: not the control plane, not template builds,
not creates, keys, audit or checkpoints. A token minted from an API key, worker or
exchanged user token, stops working as soon as the key is revoked, over HTTP or by
``corral keys revoke`` (another process); a user's tokens follow the user's role and
end with the user.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.security.conftest import SecurityServer, Tenant


def bearer(server: SecurityServer, token: str, prefix: str = "/api") -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}{prefix}", headers={"Authorization": f"Bearer {token}"}, timeout=120
    )


def counts(tenant: Tenant) -> dict[str, int]:
    """What the org has that an attack could add to."""
    with tenant.http() as http:
        return {
            what: len(http.get(path).json())
            for what, path in (("keys", "/keys"), ("templates", "/templates"), ("sandboxes", "/sandboxes"))
        }


def test_a_worker_token_reaches_its_own_sandboxs_worker_routes_and_nothing_else(
    alpha: Tenant, attacker_box: str, bystander_box: str, security_server: SecurityServer
) -> None:
    with alpha.http() as http:
        token = http.get(f"/sandboxes/{attacker_box}").json()["token"]
    before = counts(alpha)
    attempts: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/templates", {"name": "from-worker", "dockerfile": "FROM base\nRUN true\n"}),
        ("GET", "/templates", None),
        ("POST", "/sandboxes", {"templateID": "base"}),
        ("GET", "/sandboxes", None),
        ("GET", f"/sandboxes/{attacker_box}", None),
        ("POST", "/keys", {"role": "owner"}),
        ("GET", "/keys", None),
        ("GET", "/audit", None),
        ("GET", f"/sandboxes/{attacker_box}/audit", None),
        ("POST", f"/sandboxes/{attacker_box}/checkpoints", {"name": "worker"}),
        ("POST", f"/sandboxes/{attacker_box}/preview", {"port": 8080}),
        ("POST", f"/sandboxes/{attacker_box}/hibernate", None),
        ("DELETE", f"/sandboxes/{attacker_box}", None),
        ("POST", f"/sandboxes/{bystander_box}/exec/run", {"cmd": "id"}),
    ]
    with bearer(security_server, token) as control:
        answers = {(m, p): control.request(m, p, json=body) for m, p, body in attempts}
    refused = {k: (a.status_code, a.json()["error"]) for k, a in answers.items() if a.status_code != 403}
    assert not refused, refused
    assert all("worker token" in a.json()["error"] for a in answers.values())
    with bearer(security_server, token, prefix="") as worker:
        own = worker.post(f"/sandboxes/{attacker_box}/exec/run", json={"cmd": "echo", "args": ["mine"]})
        other = worker.post(f"/sandboxes/{bystander_box}/exec/run", json={"cmd": "id"})
        refresh = worker.post(f"/sandboxes/{bystander_box}/token/refresh")
    assert own.status_code == 200 and own.json()["stdout"].strip() == "mine"
    assert (other.status_code, refresh.status_code) == (404, 404)
    assert counts(alpha) == before  # nothing was built, created or minted
    with alpha.http() as http:
        assert http.get(f"/sandboxes/{attacker_box}").json()["status"] == "running"
    assert security_server.healthy()


def test_revoking_a_key_revokes_the_tokens_it_minted(
    alpha: Tenant, bystander_box: str, beta: Tenant, security_server: SecurityServer
) -> None:
    """Over HTTP, then from another process (the CLI): each key's worker token and
    exchanged user token are 401 at once, and the sandbox itself lives on."""
    with alpha.http() as http:
        keys = [http.post("/keys", json={"role": "developer", "name": f"doomed-{i}"}).json() for i in (1, 2)]
    for via, key in zip(("http", "cli"), keys, strict=True):
        with alpha.http(key["key"]) as http:
            created = http.post("/sandboxes", json={"templateID": "base", "timeout": 600})
        assert created.status_code == 201, created.text
        sandbox, worker_token = created.json()["sandboxID"], created.json()["token"]
        alpha.made.append(sandbox)
        exchanged = httpx.post(f"{security_server.url}/api/v1/auth/token", json={"api_key": key["key"]})
        user_token = exchanged.json()["token"]
        run = {"cmd": "true"}
        with bearer(security_server, worker_token, "") as worker, bearer(security_server, user_token) as user:
            assert worker.post(f"/sandboxes/{sandbox}/exec/run", json=run).status_code == 200
            assert user.get(f"/sandboxes/{sandbox}").status_code == 200
            if via == "http":
                with alpha.http() as http:
                    assert http.delete(f"/keys/{key['id']}").status_code == 204
            else:
                security_server.cli("keys", "revoke", key["id"], "--org", "alpha")
            after = [
                worker.post(f"/sandboxes/{sandbox}/exec/run", json=run),
                user.get(f"/sandboxes/{sandbox}"),
            ]
        assert [a.status_code for a in after] == [401, 401], (via, [a.text for a in after])
        assert all("revoked" in a.json()["error"] for a in after)
        assert alpha.run(sandbox, "echo alive")["stdout"].strip() == "alive"  # the owner's key still works
        alpha.kill(sandbox)
    assert beta.run(bystander_box, "echo alive")["stdout"].strip() == "alive"
    assert security_server.healthy()


def test_a_users_tokens_follow_the_user(alpha: Tenant, security_server: SecurityServer) -> None:
    """A user's token, and the worker token it got, act with the user's current role
    (given a lower one by ``corral users role``) and stop when ``corral users rm``
    removes the user (both from another process)."""
    email = f"dev-{secrets.token_hex(4)}@alpha.test"
    security_server.cli("users", "add", email, "--org", "alpha", "--role", "developer")
    token = security_server.cli("users", "token", email).splitlines()[-1].strip()
    run = {"cmd": "true"}
    with bearer(security_server, token) as user:
        created = user.post("/sandboxes", json={"templateID": "base", "timeout": 600})
        assert created.status_code == 201, created.text
        sandbox, worker_token = created.json()["sandboxID"], created.json()["token"]
        alpha.made.append(sandbox)
        with bearer(security_server, worker_token, "") as worker:
            assert worker.post(f"/sandboxes/{sandbox}/exec/run", json=run).status_code == 200
            security_server.cli("users", "role", email, "--role", "viewer")
            demoted = [
                user.post("/sandboxes", json={"templateID": "base"}),
                worker.post(f"/sandboxes/{sandbox}/exec/run", json=run),
            ]
            assert [d.status_code for d in demoted] == [403, 403], [d.text for d in demoted]
            assert user.get(f"/sandboxes/{sandbox}").status_code == 200  # a viewer reads
            security_server.cli("users", "rm", email)
            gone = [
                user.get(f"/sandboxes/{sandbox}"),
                worker.post(f"/sandboxes/{sandbox}/exec/run", json=run),
            ]
    assert [g.status_code for g in gone] == [401, 401], [g.text for g in gone]
    assert all("the user it was issued to is gone" in g.json()["error"] for g in gone)
    assert alpha.run(sandbox, "echo alive")["stdout"].strip() == "alive"  # the org's own key still works
    alpha.kill(sandbox)
    assert security_server.healthy()
