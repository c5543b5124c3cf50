"""Tenancy and auth: one org's credentials never reach another org's sandboxes."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets
import websockets.sync.client

from tests.security.conftest import SecurityServer, Tenant
from tests.support.conditions import eventually


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


# ---- every route, every id kind --------------------------------------------------------
#
# Beta (the bystander org) owns a sandbox with one of each thing an id names: an exec
# session, a PTY, a run-async exec, a checkpoint with a patch, a preview URL, an API key.
# Alpha, with its own owner key, tries each route on them, and also on its own sandbox
# with beta's sub-ids (a checkpoint of beta restored into alpha's sandbox, say). Every
# answer must be 404 (never 403: that would confirm the id exists), and nothing of
# beta's may change.


@dataclass
class Beta:
    key: str  # an owner key of beta's, for checks only
    sandbox: str
    session: str
    pty: str
    exec_id: str
    checkpoint: str
    patch: str
    key_id: str
    hostname: str
    policy: dict[str, Any]


@pytest.fixture(scope="module")
def things(beta: Tenant, bystander_box: str) -> Iterator[Beta]:
    key = beta.api_key("owner")
    with beta.http(key) as http:
        sandbox = f"/sandboxes/{bystander_box}"
        session = http.post(f"{sandbox}/exec", json={"cmd": "sleep", "args": ["3600"]})
        pty = http.post(f"{sandbox}/pty", json={})
        run = http.post(f"{sandbox}/exec/run-async", json={"cmd": "echo", "args": ["beta"]})
        preview = http.post(f"{sandbox}/preview", json={"port": 8080})
        checkpoint = http.post(f"{sandbox}/checkpoints", json={"name": f"tenancy-{secrets.token_hex(3)}"})
        assert all(r.status_code in (200, 201) for r in (session, pty, run, preview, checkpoint)), [
            r.text for r in (session, pty, run, preview, checkpoint)
        ]
        cp = checkpoint.json()["id"]
        eventually(
            lambda: http.get(f"{sandbox}/checkpoints").json()[-1]["status"] == "ready",
            30,
            "beta's checkpoint never got ready",
            0.1,
        )
        patch = http.post(f"/sandboxes/checkpoints/{cp}/patches", json={"script": "true"})
        assert patch.status_code == 201, patch.text
        hostname = http.get(f"{sandbox}/files", params={"path": "/etc/hostname"}).text
        policy = http.get(f"{sandbox}/allowed-hosts").json()
    made = Beta(
        key=key,
        sandbox=bystander_box,
        session=session.json()["sessionID"],
        pty=pty.json()["sessionID"],
        exec_id=run.json()["execId"],
        checkpoint=cp,
        patch=patch.json()["patch"]["id"],
        key_id=beta.api_key("viewer").split("_")[1],
        hostname=hostname,
        policy=policy,
    )
    yield made
    with beta.http(key) as http:
        http.post(f"{sandbox}/exec/{made.session}/kill", json={"signal": 9})
        http.delete(f"{sandbox}/pty/{made.pty}")
        http.delete(f"{sandbox}/preview/8080")
        http.delete(f"{sandbox}/checkpoints/{cp}")


def _unchanged(beta: Tenant, things: Beta) -> None:
    """Everything of beta's is as the fixture made it (the reads run at once)."""
    sandbox = f"/sandboxes/{things.sandbox}"
    with beta.http(things.key) as http, ThreadPoolExecutor(8) as pool:
        reads = {
            name: pool.submit(http.get, path, params=params)
            for name, path, params in (
                ("sandbox", sandbox, None),
                ("sessions", f"{sandbox}/exec", None),
                ("checkpoints", f"{sandbox}/checkpoints", None),
                ("patches", f"/sandboxes/checkpoints/{things.checkpoint}/patches", None),
                ("previews", f"{sandbox}/preview", None),
                ("keys", "/keys", None),
                ("policy", f"{sandbox}/allowed-hosts", None),
                ("hostname", f"{sandbox}/files", {"path": "/etc/hostname"}),
            )
        }
        got = {name: future.result() for name, future in reads.items()}
    assert got["sandbox"].status_code == 200 and got["sandbox"].json()["status"] == "running", got[
        "sandbox"
    ].text
    sessions = {s["sessionID"]: s for s in got["sessions"].json()}
    assert sessions[things.session]["running"] is True, sessions
    [checkpoint] = [c for c in got["checkpoints"].json() if c["id"] == things.checkpoint]
    assert checkpoint["status"] == "ready"
    assert [p["id"] for p in got["patches"].json()] == [things.patch]
    assert [p["port"] for p in got["previews"].json()] == [8080]
    assert things.key_id in {k["id"] for k in got["keys"].json()}
    assert got["policy"].json() == things.policy
    assert got["hostname"].text == things.hostname
    with beta.http(things.key) as http:  # the PTY is alive: resizing it works
        resized = http.post(f"{sandbox}/pty/{things.pty}/resize", json={"cols": 80, "rows": 24})
    assert resized.status_code == 200, resized.text


# (method, path, body): {B} beta's sandbox, {A} alpha's, {ES} {PS} {EX} {CP} {PA} {KEY} beta's ids
ROUTES: dict[str, tuple[str, str, Any]] = {
    "get": ("GET", "/sandboxes/{B}", None),
    "timeout": ("POST", "/sandboxes/{B}/timeout", {"timeout": 1}),
    "kill": ("DELETE", "/sandboxes/{B}", None),
    "exec_run": ("POST", "/sandboxes/{B}/exec/run", {"cmd": "id"}),
    "exec_run_async": ("POST", "/sandboxes/{B}/exec/run-async", {"cmd": "id"}),
    "exec_result": ("GET", "/sandboxes/{B}/exec/{EX}/result", None),
    "session_start": ("POST", "/sandboxes/{B}/exec", {"cmd": "id"}),
    "session_list": ("GET", "/sandboxes/{B}/exec", None),
    "session_kill": ("POST", "/sandboxes/{B}/exec/{ES}/kill", {"signal": 9}),
    "pty_start": ("POST", "/sandboxes/{B}/pty", {}),
    "pty_resize": ("POST", "/sandboxes/{B}/pty/{PS}/resize", {"cols": 10, "rows": 10}),
    "pty_kill": ("DELETE", "/sandboxes/{B}/pty/{PS}", None),
    "file_read": ("GET", "/sandboxes/{B}/files?path=/etc/hostname", None),
    "file_write": ("PUT", "/sandboxes/{B}/files?path=/root/pwned", b"pwned"),
    "file_remove": ("DELETE", "/sandboxes/{B}/files?path=/etc/hostname", None),
    "file_list": ("GET", "/sandboxes/{B}/files/list?path=/", None),
    "file_mkdir": ("POST", "/sandboxes/{B}/files/mkdir?path=/root/pwned", None),
    "preview_create": ("POST", "/sandboxes/{B}/preview", {"port": 9090}),
    "preview_list": ("GET", "/sandboxes/{B}/preview", None),
    "preview_rotate": ("POST", "/sandboxes/{B}/preview/rotate", None),
    "preview_delete": ("DELETE", "/sandboxes/{B}/preview/8080", None),
    "ports": ("GET", "/sandboxes/{B}/ports", None),
    "egress_read": ("GET", "/sandboxes/{B}/allowed-hosts", None),
    "egress_open": ("PUT", "/sandboxes/{B}/network", {"mode": "allow_all"}),
    "checkpoint_create": ("POST", "/sandboxes/{B}/checkpoints", {"name": "pwned"}),
    "checkpoint_list": ("GET", "/sandboxes/{B}/checkpoints", None),
    "checkpoint_restore": ("POST", "/sandboxes/{B}/checkpoints/{CP}/restore", None),
    "checkpoint_delete": ("DELETE", "/sandboxes/{B}/checkpoints/{CP}", None),
    "fork": ("POST", "/sandboxes/from-checkpoint/{CP}", {}),
    "patch_create": ("POST", "/sandboxes/checkpoints/{CP}/patches", {"script": "touch /pwned"}),
    "patch_list": ("GET", "/sandboxes/checkpoints/{CP}/patches", None),
    "patch_delete": ("DELETE", "/sandboxes/checkpoints/{CP}/patches/{PA}", None),
    "hibernate": ("POST", "/sandboxes/{B}/hibernate", None),
    "wake": ("POST", "/sandboxes/{B}/wake", {}),
    "keepalive": ("POST", "/sandboxes/{B}/keepalive", None),
    "audit_of_sandbox": ("GET", "/sandboxes/{B}/audit", None),
    "key_revoke": ("DELETE", "/keys/{KEY}", None),
    # alpha's own sandbox, beta's sub-ids
    "own_sandbox_exec_result": ("GET", "/sandboxes/{A}/exec/{EX}/result", None),
    "own_sandbox_session_kill": ("POST", "/sandboxes/{A}/exec/{ES}/kill", {"signal": 9}),
    "own_sandbox_pty_resize": ("POST", "/sandboxes/{A}/pty/{PS}/resize", {"cols": 10, "rows": 10}),
    "own_sandbox_pty_kill": ("DELETE", "/sandboxes/{A}/pty/{PS}", None),
    "own_sandbox_checkpoint_restore": ("POST", "/sandboxes/{A}/checkpoints/{CP}/restore", None),
    "own_sandbox_checkpoint_delete": ("DELETE", "/sandboxes/{A}/checkpoints/{CP}", None),
}


def _fill(path: str, things: Beta, own: str) -> str:
    ids = {
        "{B}": things.sandbox,
        "{A}": own,
        "{ES}": things.session,
        "{PS}": things.pty,
        "{EX}": things.exec_id,
        "{CP}": things.checkpoint,
        "{PA}": things.patch,
        "{KEY}": things.key_id,
    }
    for mark, value in ids.items():
        path = path.replace(mark, value)
    return path


@pytest.fixture(scope="module")
def attacker_key(alpha: Tenant) -> str:
    """An owner key of alpha's of this module's own (its own rate-limit bucket)."""
    return alpha.api_key("owner")


@pytest.mark.parametrize("route", list(ROUTES.values()), ids=list(ROUTES))
def test_another_orgs_ids_are_not_found(
    route: tuple[str, str, Any],
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    attacker_key: str,
    things: Beta,
    security_server: SecurityServer,
) -> None:
    method, path, body = route
    with alpha.http(attacker_key) as http:
        url = _fill(path, things, attacker_box)
        if isinstance(body, bytes):
            answer = http.request(method, url, content=body)
        else:
            answer = http.request(method, url, json=body)
    assert answer.status_code == 404, f"{method} {url}: {answer.status_code} {answer.text[:300]}"
    for secret_id in (things.sandbox, things.session, things.checkpoint, things.hostname.strip()):
        if secret_id not in url:
            assert secret_id not in answer.text
    if method != "GET":  # a read changes nothing; whatever else did must show
        _unchanged(beta, things)
    assert security_server.healthy()


def test_org_audit_trail_shows_nothing_of_another_org(alpha: Tenant, attacker_key: str, things: Beta) -> None:
    """No event of beta's sandbox or key is in alpha's trail (alpha's own commands may
    name beta's ids: the filesystem attacks do)."""
    with alpha.http(attacker_key) as http:
        answer = http.get("/audit", params={"sandboxID": things.sandbox})
        everything = http.get("/audit", params={"limit": 500})
    assert answer.status_code == 404 or answer.json()["events"] == [], answer.text
    assert everything.status_code == 200, everything.text
    events = everything.json()["events"]
    assert events, "alpha's own trail is empty: the check would prove nothing"
    assert [e for e in events if e["sandboxID"] == things.sandbox or e["keyID"] == things.key_id] == []


def test_listings_show_nothing_of_another_org(alpha: Tenant, attacker_key: str, things: Beta) -> None:
    with alpha.http(attacker_key) as http:
        listed = [http.get("/sandboxes"), http.get("/keys"), http.get("/templates")]
    assert all(r.status_code == 200 for r in listed), [r.text for r in listed]
    for answer in listed:
        assert things.sandbox not in answer.text and things.key_id not in answer.text


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("session", "/api/sandboxes/{B}/exec/{ES}"),
        ("pty", "/api/sandboxes/{B}/pty/{PS}"),
        ("session_via_own_sandbox", "/api/sandboxes/{A}/exec/{ES}"),
        ("pty_via_own_sandbox", "/api/sandboxes/{A}/pty/{PS}"),
    ],
)
def test_websocket_attach_to_another_orgs_session_is_refused(
    kind: str,
    path: str,
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    attacker_key: str,
    things: Beta,
    security_server: SecurityServer,
) -> None:
    """A WebSocket attach would give the attacker the session's output and stdin."""
    url = security_server.url.replace("http", "ws", 1) + _fill(path, things, attacker_box)
    with (
        pytest.raises(websockets.InvalidStatus) as refused,
        websockets.sync.client.connect(
            f"{url}?api_key={attacker_key}", open_timeout=20, close_timeout=2
        ) as ws,
    ):
        ws.recv(timeout=5)  # pragma: no cover - reached only if the attack worked
    assert refused.value.response.status_code in (403, 404), kind
    _unchanged(beta, things)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sandboxes/{B}"),
        ("POST", "/sandboxes/{B}/exec/run"),
        ("GET", "/sandboxes/{B}/files?path=/etc/hostname"),
        ("POST", "/sandboxes/{B}/token/refresh"),
        ("GET", "/sandboxes/{B}/exec"),
    ],
    ids=["get", "exec_run", "file_read", "token_refresh", "session_list"],
)
def test_alphas_worker_token_does_not_reach_betas_sandbox(
    method: str,
    path: str,
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    things: Beta,
    security_server: SecurityServer,
) -> None:
    """The worker routes (at the root, Bearer JWT) with a worker token of alpha's."""
    with alpha.http() as http:
        token = http.get(f"/sandboxes/{attacker_box}").json()["token"]
    url = security_server.url + _fill(path, things, "")
    body = {"cmd": "id"} if method == "POST" and "exec" in path else None
    answer = httpx.request(method, url, headers={"Authorization": f"Bearer {token}"}, json=body, timeout=30)
    assert answer.status_code in (401, 404), f"{method} {url}: {answer.status_code} {answer.text[:300]}"
    _unchanged(beta, things)


def test_gateway_preview_of_another_org_is_not_found(
    alpha: Tenant, attacker_key: str, things: Beta, security_server: SecurityServer
) -> None:
    """The path-routed gateway with alpha's key on beta's preview port."""
    for headers in ({"X-API-Key": attacker_key}, {"Authorization": f"Bearer {attacker_key}"}):
        answer = httpx.get(
            f"{security_server.url}/preview/{things.sandbox}/8080/", headers=headers, timeout=30
        )
        assert answer.status_code == 404, answer.text
