"""Forged and tampered credentials: JWTs (worker and user tokens) and API keys.

The attacker holds alpha's genuine credentials and edits them: no signature (``alg:
none``), another secret, another algorithm, claims swapped to beta's org and sandbox
with the signature kept, a role raised, an expired token; API keys with another key's
id, one character changed, revoked, padded. Each must be 401 on the control plane
(``/api``) and on the worker routes (the root). Where the server's own secret signs a
token (read from the data dir, as only the operator could), the test is of what lies
behind the signature: expiry, the algorithm list, and the org check of the sandbox id.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.security.conftest import SecurityServer, Tenant


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def _with_claims(token: str, **changes: Any) -> str:
    """``token`` with its payload edited and its header and signature kept."""
    header, _, signature = token.split(".")
    claims = {**_claims(token), **changes}
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _unsigned(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


@pytest.fixture(scope="module")
def genuine(alpha: Tenant, beta: Tenant, attacker_box: str, bystander_box: str) -> dict[str, Any]:
    """Alpha's own worker token, and beta's org id and sandbox as the attacker would
    learn them (the org id from a token's readable payload is assumed known)."""
    with alpha.http() as http:
        alpha_token = http.get(f"/sandboxes/{attacker_box}").json()["token"]
    with beta.http() as http:
        beta_org = _claims(http.get(f"/sandboxes/{bystander_box}").json()["token"])["org"]
    return {"token": alpha_token, "claims": _claims(alpha_token), "beta_org": beta_org}


def _beta_claims(genuine: dict[str, Any], bystander_box: str, **extra: Any) -> dict[str, Any]:
    return {
        **genuine["claims"],
        "sub": bystander_box,
        "org": genuine["beta_org"],
        "role": "owner",
        "exp": int(time.time()) + 3600,
        **extra,
    }


def _secret(server: SecurityServer) -> str:
    return (server.data_dir / "jwt-secret").read_text().strip()


def _answers(server: SecurityServer, credential: str, sandbox_id: str) -> list[int]:
    """Statuses of a read of ``sandbox_id`` on both mounts, as Bearer and as X-API-Key."""
    statuses = []
    for path in (f"/api/sandboxes/{sandbox_id}", f"/sandboxes/{sandbox_id}"):
        for headers in ({"Authorization": f"Bearer {credential}"}, {"X-API-Key": credential}):
            statuses.append(httpx.get(server.url + path, headers=headers, timeout=30).status_code)
    return statuses


FORGERIES: dict[str, Callable[[dict[str, Any], str, str], str]] = {
    "alg_none": lambda g, b, s: _unsigned(_beta_claims(g, b)),
    "alg_none_uppercase": lambda g, b, s: (
        _b64(json.dumps({"alg": "NONE", "typ": "JWT"}).encode())
        + "."
        + _unsigned(_beta_claims(g, b)).split(".")[1]
        + "."
    ),
    "another_secret": lambda g, b, s: jwt.encode(
        _beta_claims(g, b), secrets.token_hex(32), algorithm="HS256"
    ),
    "another_algorithm_same_secret": lambda g, b, s: jwt.encode(_beta_claims(g, b), s, algorithm="HS512"),
    "claims_swapped_signature_kept": lambda g, b, s: _with_claims(g["token"], sub=b, org=g["beta_org"]),
    "org_swapped_signature_kept": lambda g, b, s: _with_claims(g["token"], org=g["beta_org"]),
    "signature_stripped": lambda g, b, s: g["token"].rsplit(".", 1)[0] + ".",
    "signature_of_another_token": lambda g, b, s: (
        _with_claims(g["token"], sub=b, org=g["beta_org"]).rsplit(".", 1)[0]
        + "."
        + jwt.encode({"x": 1}, s, algorithm="HS256").rsplit(".", 1)[1]
    ),
    "expired_real_secret": lambda g, b, s: jwt.encode(
        {**g["claims"], "iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, s, algorithm="HS256"
    ),
    "unknown_type_real_secret": lambda g, b, s: jwt.encode(
        {**_beta_claims(g, b), "typ": "admin"}, s, algorithm="HS256"
    ),
}


@pytest.mark.parametrize("forgery", list(FORGERIES.values()), ids=list(FORGERIES))
def test_forged_token_is_refused(
    forgery: Callable[[dict[str, Any], str, str], str],
    genuine: dict[str, Any],
    bystander_box: str,
    security_server: SecurityServer,
    unnoticed: Callable[[], None],
) -> None:
    token = forgery(genuine, bystander_box, _secret(security_server))
    assert _answers(security_server, token, bystander_box) == [401] * 4
    unnoticed()


def test_genuine_token_still_works(
    genuine: dict[str, Any], attacker_box: str, security_server: SecurityServer
) -> None:
    """The control: the unedited token reads its own sandbox on the worker routes (so
    the 401s above are about the edits); the control plane is not its to use."""
    assert _answers(security_server, genuine["token"], attacker_box)[2:] == [200] * 2
    assert _answers(security_server, genuine["token"], attacker_box)[:2] == [403] * 2


def test_token_naming_another_orgs_sandbox_is_not_found(
    genuine: dict[str, Any],
    bystander_box: str,
    security_server: SecurityServer,
    unnoticed: Callable[[], None],
) -> None:
    """Behind a valid signature: a worker token of org alpha that names beta's sandbox
    reaches nothing (the sandbox is looked up in the token's org)."""
    token = jwt.encode(
        {**genuine["claims"], "sub": bystander_box, "exp": int(time.time()) + 600},
        _secret(security_server),
        algorithm="HS256",
    )
    answers = _answers(security_server, token, bystander_box)
    assert answers[2:] == [404] * 2 and set(answers[:2]) <= {403, 404}, answers
    unnoticed()


def test_worker_token_reaches_only_its_own_sandbox(
    alpha: Tenant, genuine: dict[str, Any], security_server: SecurityServer
) -> None:
    """Alpha's worker token of one sandbox, on another sandbox of alpha's."""
    other = alpha.create(timeout=300)["sandboxID"]
    answers = _answers(security_server, genuine["token"], other)
    assert answers[2:] == [404] * 2 and set(answers[:2]) <= {403, 404}, answers
    answer = httpx.post(
        f"{security_server.url}/sandboxes/{other}/exec/run",
        headers={"Authorization": f"Bearer {genuine['token']}"},
        json={"cmd": "id"},
        timeout=30,
    )
    assert answer.status_code == 404, answer.text
    alpha.kill(other)


def test_user_token_with_its_org_swapped_is_refused(
    alpha: Tenant, bystander_box: str, genuine: dict[str, Any], security_server: SecurityServer
) -> None:
    """Spec 002's exchanged user token (15 minutes), edited to beta's org."""
    answer = httpx.post(f"{security_server.url}/api/v1/auth/token", json={"api_key": alpha.key}, timeout=30)
    assert answer.status_code in (200, 201), answer.text
    body = answer.json()
    token = body.get("token") or body.get("access_token") or body["data"]["token"]
    forged = _with_claims(token, org=genuine["beta_org"])
    raised = _with_claims(token, role="owner", scopes=None)
    for credential in (forged, raised):
        got = httpx.get(
            f"{security_server.url}/api/sandboxes/{bystander_box}",
            headers={"Authorization": f"Bearer {credential}"},
            timeout=30,
        )
        assert got.status_code == 401, got.text


def test_role_raised_in_a_viewers_token_is_refused(
    alpha: Tenant, attacker_box: str, security_server: SecurityServer
) -> None:
    """A viewer's worker token with ``role`` edited to owner cannot kill the sandbox."""
    with alpha.http(alpha.api_key("viewer")) as http:
        token = http.get(f"/sandboxes/{attacker_box}").json()["token"]
    raised = _with_claims(token, role="owner")
    answer = httpx.delete(
        f"{security_server.url}/api/sandboxes/{attacker_box}",
        headers={"Authorization": f"Bearer {raised}"},
        timeout=30,
    )
    assert answer.status_code == 401, answer.text
    assert alpha.run(attacker_box, "echo alive")["stdout"] == "alive\n"


KEY_TAMPERS: dict[str, Callable[[str, str], str]] = {
    "another_keys_id": lambda alpha_key, beta_key: f"ek_{beta_key.split('_')[1]}_{alpha_key.split('_')[2]}",
    "one_character_changed": lambda a, b: a[:-1] + ("A" if a[-1] != "A" else "B"),
    "secret_truncated": lambda a, b: a[:-1],
    "secret_extended": lambda a, b: a + "0",
    "unknown_id": lambda a, b: f"ek_{secrets.token_hex(8)}_{a.split('_')[2]}",
    "uppercased_id": lambda a, b: "ek_" + a.split("_")[1].upper() + "_" + a.split("_")[2],
    "padded_with_spaces_inside": lambda a, b: a.replace("_", " _", 1),
    "null_byte_appended": lambda a, b: a + "%00",
}


@pytest.mark.parametrize("tamper", list(KEY_TAMPERS.values()), ids=list(KEY_TAMPERS))
def test_tampered_api_key_is_refused(
    tamper: Callable[[str, str], str],
    alpha: Tenant,
    beta: Tenant,
    bystander_box: str,
    security_server: SecurityServer,
    unnoticed: Callable[[], None],
) -> None:
    key = tamper(alpha.key, beta.key)
    answer = httpx.get(
        f"{security_server.url}/api/sandboxes/{bystander_box}", headers={"X-API-Key": key}, timeout=30
    )
    assert answer.status_code == 401, f"{key!r}: {answer.status_code} {answer.text}"
    listed = httpx.get(f"{security_server.url}/api/sandboxes", headers={"X-API-Key": key}, timeout=30)
    assert listed.status_code == 401
    unnoticed()


def test_revoked_key_is_refused_at_once(alpha: Tenant, security_server: SecurityServer) -> None:
    key = alpha.api_key("developer")
    with alpha.http(key) as http:
        assert http.get("/sandboxes").status_code == 200  # it worked, and is now cached
    with alpha.http() as http:
        assert http.delete(f"/keys/{key.split('_')[1]}").status_code == 204
    with alpha.http(key) as http:
        assert http.get("/sandboxes").status_code == 401


def test_credential_in_the_query_of_a_plain_request_is_ignored(
    alpha: Tenant, attacker_box: str, genuine: dict[str, Any], security_server: SecurityServer
) -> None:
    """``?api_key=`` and ``?token=`` are for WebSockets only (they end up in logs)."""
    for query in (f"api_key={alpha.key}", f"token={genuine['token']}"):
        answer = httpx.get(f"{security_server.url}/api/sandboxes/{attacker_box}?{query}", timeout=30)
        assert answer.status_code == 401, answer.text
