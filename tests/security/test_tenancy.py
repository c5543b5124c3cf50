"""Tenancy and auth: one org's credentials never reach another org's sandboxes."""

from __future__ import annotations

from tests.security.conftest import SecurityServer, Tenant


def test_another_orgs_sandbox_is_not_found_on_every_route(
    alpha: Tenant, beta: Tenant, bystander_box: str, security_server: SecurityServer
) -> None:
    with alpha.http() as http:
        answers = [
            http.get(f"/sandboxes/{bystander_box}"),
            http.post(f"/sandboxes/{bystander_box}/exec/run", json={"cmd": "id"}),
            http.get(f"/sandboxes/{bystander_box}/files", params={"path": "/etc/hostname"}),
            http.delete(f"/sandboxes/{bystander_box}"),
        ]
        listed = http.get("/sandboxes").json()
    assert [a.status_code for a in answers] == [404, 404, 404, 404]
    assert bystander_box not in {s["sandboxID"] for s in listed}
    assert beta.run(bystander_box, "echo alive")["stdout"].strip() == "alive"
    assert security_server.healthy()
