"""Every route of every surface x every kind of caller, with the status each must get.

Columns (``access_world.CREDS``): no credential, a malformed header, a revoked key, an
expired JWT, a JWT with ``alg: none``, a JWT signed with another secret, a worker token
minted by a key since revoked (all 401), a viewer, a developer, an admin, another org's
owner and the owner (API keys), a token exchanged from the owner's key, one narrowed to
``sandbox:read``, a developer user's token, and the worker tokens of the shared sandbox
and of another sandbox of the org. Rows: ``ROUTES``; the expected status of a cell
follows from the route's scope (``corral.auth.scopes``) and whether it names a resource
of the owner's org (another org's owner gets 404 there, never 403). A worker token is
for its own sandbox's worker routes (and the gateway to it): 403 on the whole control
plane, 404 for any other sandbox; a token is no API key (401 at the exchange).
``test_every_route_is_in_the_matrix`` fails when a route is added without a row.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from corral.api.app import create_app
from corral.settings import Settings
from tests.unit.api.access_world import BAD, CREDS, WORKERS, World, serve_world

READ, WRITE, CREATE, EXEC, DELETE, AUDIT, KEYS, BINDINGS, TOKEN = (
    "sandbox:read", "sandbox:write", "sandbox:create", "sandbox:exec", "sandbox:delete",
    "audit:read", "keys:manage", "bindings:manage", "token",
)  # fmt: skip
SESSIONS_READ, SESSIONS_WRITE = "sessions:read", "sessions:write"
VIEWER_SCOPES = {READ, TOKEN, SESSIONS_READ}
ADMIN_ONLY = {AUDIT, KEYS, BINDINGS}
BINDING = {"url": "https://upstream.example/v1", "header": "Authorization", "secret": "Bearer m"}
_fresh_port = itertools.count(20000)
NO_AGENT = "as-" + "0" * 16  # a well-formed agent session id no sandbox has


@dataclass(frozen=True)
class Row:
    method: str  # an HTTP method, or WS
    path: str  # placeholders: {sid} {es} {ps} {exec} {port} {key} {file} {pport} of World.ids or fresh
    scope: str
    ok: tuple[int, ...]
    bound: bool = True  # names a resource of the owner's org: another org's owner gets 404
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    fresh: tuple[str, ...] = ()  # placeholders made anew for each cell (destructive routes)

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def operations(prefix: str) -> list[Row]:
    """The operational routes both OpenComputer mounts have (``prefix`` "/api" or "")."""
    sb = prefix + "/sandboxes/{sid}"
    return [
        Row("GET", sb, READ, (200,)),
        Row("POST", sb + "/timeout", WRITE, (204,), body={"timeout": 600}),
        Row("POST", sb + "/exec/run", EXEC, (200,), body={"cmd": "true"}),
        Row("POST", sb + "/exec/run-async", EXEC, (201,), body={"cmd": "true"}),
        Row("GET", sb + "/exec/{exec}/result", READ, (200,)),
        Row("POST", sb + "/exec", EXEC, (201,), body={"cmd": "true"}),
        Row("GET", sb + "/exec", READ, (200,)),
        Row("POST", sb + "/exec/{es}/kill", EXEC, (204,), fresh=("es",)),
        Row("WS", sb + "/exec/{es}", EXEC, (101,)),
        Row("GET", sb + "/files", READ, (200,), params={"path": "/tmp/m.txt"}),
        Row("PUT", sb + "/files", WRITE, (204,), body=b"x", params={"path": "/tmp/w.txt"}),
        Row("DELETE", sb + "/files", WRITE, (204,), params={"path": "{file}"}, fresh=("file",)),
        Row("GET", sb + "/files/list", READ, (200,), params={"path": "/tmp"}),
        Row("POST", sb + "/files/mkdir", WRITE, (204,), params={"path": "/tmp/d"}),
        Row("POST", sb + "/pty", EXEC, (201,), body={}),
        Row("POST", sb + "/pty/{ps}/resize", EXEC, (200,), body={"cols": 100, "rows": 30}),
        Row("DELETE", sb + "/pty/{ps}", EXEC, (204,), fresh=("ps",)),
        Row("WS", sb + "/pty/{ps}", EXEC, (101,)),
        Row("GET", sb + "/ports", READ, (200,)),
        Row("GET", sb + "/allowed-hosts", READ, (200,)),
        Row("PUT", sb + "/network", WRITE, (200,), body={"mode": "allow_all"}),
        Row("POST", sb + "/keepalive", WRITE, (204,)),
        # agent sessions: the shared sandbox is no `agent` one (400 at a create that may
        # run), and the session named is none of its own (404 once the scope allows)
        Row("POST", sb + "/agent", EXEC, (400,), body={"prompt": "hi"}),
        Row("GET", sb + "/agent", READ, (200,)),
        Row("POST", sb + f"/agent/{NO_AGENT}/prompt", EXEC, (404,), body={"text": "hi"}),
        Row("POST", sb + f"/agent/{NO_AGENT}/interrupt", EXEC, (404,)),
        Row("POST", sb + f"/agent/{NO_AGENT}/kill", EXEC, (404,)),
    ]


ROUTES: list[Row] = [
    # OpenComputer control plane (/api)
    Row("POST", "/api/sandboxes", CREATE, (201,), bound=False, body={}),
    Row("GET", "/api/sandboxes", READ, (200,), bound=False),
    Row("DELETE", "/api/sandboxes/{sid}", DELETE, (204,), fresh=("sid",)),
    *operations("/api"),
    Row("POST", "/api/sandboxes/{sid}/preview", WRITE, (200, 201), body={"port": 3000}),
    Row("GET", "/api/sandboxes/{sid}/preview", READ, (200,)),
    Row("POST", "/api/sandboxes/{sid}/preview/rotate", WRITE, (200,)),
    Row("DELETE", "/api/sandboxes/{sid}/preview/{pport}", WRITE, (204,), fresh=("pport",)),
    Row("GET", "/api/sandboxes/{sid}/audit", AUDIT, (200,)),
    Row("GET", "/api/audit", AUDIT, (200,), bound=False),
    Row("POST", "/api/keys", KEYS, (201,), bound=False, body={"role": "viewer"}),
    Row("GET", "/api/keys", KEYS, (200,), bound=False),
    Row("DELETE", "/api/keys/{key}", KEYS, (204,), fresh=("key",)),
    Row("GET", "/api/me", READ, (200,), bound=False),  # no scope needed: every principal here has read
    Row("GET", "/api/node", READ, (200,), bound=False),
    Row("GET", "/api/users", READ, (200,), bound=False),
    Row(
        "POST",
        "/api/users",
        KEYS,
        (201,),
        bound=False,
        body={"email": "{email}", "role": "viewer"},
        fresh=("email",),
    ),
    Row("PUT", "/api/users/{user_id}", KEYS, (200,), body={"role": "viewer"}, fresh=("user_id",)),
    Row("DELETE", "/api/users/{user_id}", KEYS, (204,), fresh=("user_id",)),
    # service bindings: the first add of the name is a 201, the next ones a 409
    Row("POST", "/api/bindings", BINDINGS, (201, 409), bound=False, body={"name": "m", **BINDING}),
    Row("GET", "/api/bindings", BINDINGS, (200,), bound=False),
    Row("DELETE", "/api/bindings/{name}", BINDINGS, (204,), fresh=("name",)),  # a binding's name
    # checkpoints, forks, patches, hibernation: on a sandbox of their own ({sandbox_id})
    Row("POST", "/api/sandboxes/{sid}/checkpoints", WRITE, (201,), body={"name": "m"}, fresh=("sid",)),
    Row("GET", "/api/sandboxes/{sandbox_id}/checkpoints", READ, (200,)),
    Row("POST", "/api/sandboxes/{sandbox_id}/checkpoints/{checkpoint_id}/restore", WRITE, (200,)),
    Row(
        "DELETE",
        "/api/sandboxes/{sandbox_id}/checkpoints/{checkpoint_id}",
        WRITE,
        (204,),
        fresh=("checkpoint_id",),
    ),
    Row("POST", "/api/sandboxes/from-checkpoint/{checkpoint_id}", CREATE, (201,), body={}),
    Row("POST", "/api/sandboxes/checkpoints/{checkpoint_id}/patches", WRITE, (201,), body={"script": "true"}),
    Row("GET", "/api/sandboxes/checkpoints/{checkpoint_id}/patches", READ, (200,)),
    Row(
        "DELETE",
        "/api/sandboxes/checkpoints/{checkpoint_id}/patches/{patch_id}",
        WRITE,
        (204,),
        fresh=("patch_id",),
    ),
    Row("POST", "/api/sandboxes/{sandbox_id}/hibernate", WRITE, (200,)),
    Row("POST", "/api/sandboxes/{sandbox_id}/wake", WRITE, (200,), body={}),
    Row("POST", "/api/sandboxes/{sandbox_id}/pause", WRITE, (200, 409)),  # 409: hibernated by a cell
    Row("POST", "/api/sandboxes/{sandbox_id}/resume", WRITE, (200, 409)),  # 409: it runs
    # templates: no builder on the process runtime (503); built-ins are everyone's
    Row("POST", "/api/templates", CREATE, (503,), bound=False, body={"name": "m", "dockerfile": "FROM base"}),
    Row("GET", "/api/templates", READ, (200,), bound=False),
    Row("GET", "/api/templates/{name}", READ, (200,), bound=False),
    Row("DELETE", "/api/templates/{name}", DELETE, (409,), bound=False),
    # OpenComputer worker routes (at the root)
    Row("POST", "/sandboxes/{sid}/token/refresh", READ, (200,)),
    *operations(""),
    # xgen (/api/v1): any valid key may exchange
    Row("POST", "/api/v1/auth/token", TOKEN, (200,), bound=False),
    # the gateway, by path, to the web server in the sandbox
    Row("GATEWAY", "/preview/{sid}/{port}/m.txt", EXEC, (200,)),
    # Enclave code sessions (spec 001, Bearer only); {session_id}: an ended session of the owner's org
    Row("POST", "/sessions", SESSIONS_WRITE, (201,), bound=False, body={"code": "print(1)"}),
    Row("GET", "/sessions", SESSIONS_READ, (200,), bound=False),
    Row("GET", "/sessions/{session_id}", SESSIONS_READ, (200,)),
    Row("GET", "/sessions/{session_id}/result", SESSIONS_READ, (200,)),
    Row("GET", "/sessions/{session_id}/audit", SESSIONS_READ, (200,)),
    Row("GET", "/sessions/{session_id}/stream", SESSIONS_READ, (200,)),
    Row("DELETE", "/sessions/{session_id}", SESSIONS_WRITE, (200,)),  # of an ended one: idempotent
    # agent runs (spec 004, Bearer); {thread_id}/{run_id}: an ended run of the owner's org (no
    # desktop here: its run fails at once); extend: {sid} is no thread's desktop (404 for all)
    Row("POST", "/api/sessions", SESSIONS_WRITE, (201,), bound=False, body={"prompt": "m"}),
    Row("GET", "/api/sessions/{thread_id}", SESSIONS_READ, (200,)),
    Row("POST", "/api/sessions/{thread_id}/runs", SESSIONS_WRITE, (201,), body={"message": "m"}),
    Row("GET", "/api/sessions/{thread_id}/runs/{run_id}", SESSIONS_READ, (200,)),
    Row("GET", "/api/sessions/{thread_id}/runs/{run_id}/stream", SESSIONS_READ, (200,)),
    Row("POST", "/api/sessions/{thread_id}/runs/{run_id}/cancel", SESSIONS_WRITE, (200,)),  # ended: as it is
    Row("POST", "/api/sandbox/extend", SESSIONS_WRITE, (404,), body={"sandboxId": "{sid}"}),
]


TOKENS = ("exchanged", "read-only token", "user developer", *WORKERS)  # JWTs: no API key to exchange


def expected(row: Row, cred: str) -> tuple[int, ...]:
    if cred in BAD or (cred in TOKENS and row.scope == TOKEN):
        return (401,)
    if cred in WORKERS:
        if row.path.startswith(("/api", "/sessions")):  # a worker token holds no sessions:* scope
            return (403,)
        return row.ok if cred == "worker" else (404,)  # the worker rows name {sid}
    if cred == "read-only token" and row.scope != READ:
        return (403,)
    if cred == "viewer" and row.scope not in VIEWER_SCOPES:
        return (403,)
    if cred in ("developer", "user developer") and row.scope in ADMIN_ONLY:
        return (403,)
    if cred == "rival owner" and row.bound:
        return (404,)
    return row.ok


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from serve_world(tmp_path_factory.mktemp("matrix"))


def fresh(world: World, name: str) -> str:
    """A new resource of the owner's org for one cell of a destructive route."""
    base = f"/api/sandboxes/{world.ids['sid']}"
    if name == "sid":
        return str(world.owner("POST", "/api/sandboxes", json={}).json()["sandboxID"])
    if name == "es":
        return str(
            world.owner("POST", f"{base}/exec", json={"cmd": "sleep", "args": ["600"]}).json()["sessionID"]
        )
    if name == "ps":
        return str(world.owner("POST", f"{base}/pty", json={}).json()["sessionID"])
    if name == "file":
        path = f"/tmp/gone-{next(_fresh_port)}.txt"
        world.owner("PUT", f"{base}/files", params={"path": path}, content=b"x").raise_for_status()
        return path
    if name == "pport":
        port = str(next(_fresh_port))
        world.owner("POST", f"{base}/preview", json={"port": int(port)}).raise_for_status()
        return port
    if name == "key":
        return str(world.owner("POST", "/api/keys", json={"role": "viewer"}).json()["id"])
    if name == "email":  # of a user to add
        return f"u{next(_fresh_port)}@example.com"
    if name == "user_id":  # a viewer user of the owner's org
        made = world.owner("POST", "/api/users", json={"email": fresh(world, "email"), "role": "viewer"})
        return str(made.json()["id"])
    if name == "name":  # of a binding
        made = f"b{next(_fresh_port)}"
        world.owner("POST", "/api/bindings", json={"name": made, **BINDING}).raise_for_status()
        return made
    if name == "checkpoint_id":  # on {sandbox_id}, keeping it under its 10 checkpoints
        listed = f"/api/sandboxes/{world.ids['sandbox_id']}/checkpoints"
        for old in world.owner("GET", listed).json():
            if old["id"] != world.ids["checkpoint_id"]:
                world.owner("DELETE", f"{listed}/{old['id']}")
        made = world.owner("POST", listed, json={"name": f"fresh-{next(_fresh_port)}"})
        return str(made.json()["id"])
    if name == "patch_id":
        patches = f"/api/sandboxes/checkpoints/{world.ids['checkpoint_id']}/patches"
        return str(world.owner("POST", patches, json={"script": "true"}).json()["patch"]["id"])
    raise AssertionError(name)


_ended: dict[int, str] = {}
_ended_runs: dict[int, tuple[str, str]] = {}


def ended_run(world: World) -> tuple[str, str]:
    """A thread of the owner's org and its run, ended (it fails: no desktop here), once per world."""
    if id(world) not in _ended_runs:
        headers = {"Authorization": f"Bearer {world.keys['owner']}"}
        thread = str(
            world.http.post("/api/sessions", json={"prompt": "m"}, headers=headers).json()["threadId"]
        )
        run = world.http.post(f"/api/sessions/{thread}/runs", json={"message": "m"}, headers=headers).json()
        world.http.get(
            f"/api/sessions/{thread}/runs/{run['runId']}/stream", headers=headers
        ).raise_for_status()
        _ended_runs[id(world)] = (thread, str(run["runId"]))
    return _ended_runs[id(world)]


def ended_session(world: World) -> str:
    """A session of the owner's org, run to its end once per world."""
    if id(world) not in _ended:
        headers = {"Authorization": f"Bearer {world.keys['owner']}"}
        made = world.http.post("/sessions", json={"code": "print(1)"}, headers=headers)
        session_id = str(made.json()["id"])
        world.http.get(f"/sessions/{session_id}/stream", headers=headers).raise_for_status()  # to its end
        _ended[id(world)] = session_id
    return _ended[id(world)]


def call(world: World, row: Row, cred: str) -> tuple[int, httpx.Response | None]:
    values = dict(world.ids)
    if "{session_id}" in row.path:
        values["session_id"] = ended_session(world)
    if "{thread_id}" in row.path:
        values["thread_id"], values["run_id"] = ended_run(world)
    for name in row.fresh:
        values[name] = fresh(world, name)
    path = row.path.format(**values)
    params = {k: v.format(**values) for k, v in row.params.items()}
    if row.method == "WS":
        headers = world.headers(cred, bearer=not path.startswith("/api"))
        try:
            with connect(
                world.url.replace("http", "ws", 1) + path, additional_headers=headers, open_timeout=10
            ):
                return 101, None
        except InvalidStatus as exc:
            return exc.response.status_code, None
    if row.scope == TOKEN:
        key = world.credential(cred)
        response = world.http.post(path, json={"api_key": key} if key else {})
        return response.status_code, response
    bearer = not path.startswith("/api") or path.startswith(("/api/sessions", "/api/sandbox/"))  # spec 004's
    headers = world.headers(cred, bearer=bearer)
    method = "GET" if row.method == "GATEWAY" else row.method
    kwargs: dict[str, Any] = {"params": params, "headers": headers}
    if isinstance(row.body, bytes):
        kwargs["content"] = row.body
    elif isinstance(row.body, dict):
        kwargs["json"] = {k: v.format(**values) if isinstance(v, str) else v for k, v in row.body.items()}
    elif row.body is not None:
        kwargs["json"] = row.body
    response = world.http.request(method, path, **kwargs)
    made = response.json().get("sandboxID") if response.status_code == 201 else None
    for leftover in {values["sid"], made} - {world.ids["sid"], None} if "sid" in row.fresh or made else ():
        world.owner("DELETE", f"/api/sandboxes/{leftover}")  # under the org's cap of live sandboxes
    return response.status_code, response


@pytest.mark.parametrize("cred", CREDS)
@pytest.mark.parametrize("row", ROUTES, ids=[r.id for r in ROUTES])
def test_access(world: World, row: Row, cred: str) -> None:
    status, response = call(world, row, cred)
    assert status in expected(row, cred), (status, response.text if response is not None else "")
    if response is not None and status >= 400 and row.method != "GATEWAY":
        body = response.json()
        if "statusCode" in body:  # the Enclave surface's envelope (Fastify's)
            message = body["message"]
        else:
            message = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
        assert message and "internal" not in message
        if cred == "malformed" and row.scope != TOKEN:
            assert "Bearer" in message  # says which form is expected
        if status == 403:  # names the missing scope, or that a worker token is not for this route
            assert ("worker token" if cred in WORKERS else row.scope) in message


def test_every_route_is_in_the_matrix(tmp_path: Any) -> None:
    app = create_app(Settings(data_dir=tmp_path, runtime="process"))
    served = {
        (method.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for method in ops
        if path not in ("/healthz",)
    }
    templates = {
        (r.method, r.path.replace("{sid}", "{sandbox_id}").replace("{exec}", "{exec_id}")) for r in ROUTES
    }
    normalized = {
        (m, p.replace("{es}", "{session_id}").replace("{ps}", "{session_id}").replace("{pport}", "{port}")
         .replace("{key}", "{key_id}").replace(NO_AGENT, "{session_id}"))
        for m, p in templates
    }  # fmt: skip
    missing = sorted(served - normalized)
    assert not missing, f"routes without a row in the access matrix: {missing}"
    sockets = {p for m, p in normalized if m == "WS"}
    assert sockets == {
        f"{prefix}/sandboxes/{{sandbox_id}}/{kind}/{{session_id}}"
        for prefix in ("/api", "")
        for kind in ("exec", "pty")
    }


def test_the_wrong_header_form_says_which_is_expected(world: World) -> None:
    key = world.keys["owner"]
    wrong = world.http.get("/api/sandboxes", headers={"X-API-Key": f"Bearer {key}"})
    assert wrong.status_code == 401
    assert "X-API-Key takes the bare API key" in wrong.json()["error"]
    missing = world.http.get("/api/sandboxes")
    assert "X-API-Key: ek_<id>_<secret>" in missing.json()["error"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
