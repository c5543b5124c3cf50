"""The world of the access matrix: a real server (uvicorn in a thread, process runtime)
whose store holds two orgs and every kind of credential, and a running sandbox with a
live exec session, a live PTY, a file, a finished exec and a web server on a port.

``Creds`` are the matrix's columns: how each kind of caller presents itself, one for
every kind of credential corral mints: API keys of each role, a user's JWT, tokens
exchanged from a key (spec 002's ``/api/v1/auth/token``, and one narrowed to
``sandbox:read``), the worker tokens of the shared sandbox and of another one, and a
worker token whose key was revoked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt

from corral.core import Core
from corral.ids import new_id
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.settings import Settings
from corral.store.users import SqlUserStore, User
from tests.support.app import KEY, make_app, make_settings, remove_sandboxes, served
from tests.support.conditions import eventually
from tests.support.sockets import listening, port_of

SECRET = "matrix-secret-of-enough-length-for-hs256-000000"
BAD = (
    "none",
    "malformed",
    "revoked",
    "expired jwt",
    "jwt alg none",
    "jwt other secret",
    "revoked key's worker",
)
GOOD = (
    "viewer",
    "developer",
    "rival owner",
    "owner",
    "admin",
    "exchanged",
    "read-only token",
    "user developer",
)
WORKERS = ("worker", "other worker")  # worker tokens of the shared sandbox {sid}, and of {sandbox_id}
CREDS = BAD + GOOD + WORKERS


def user_token(
    org: str, role: str, *, secret: str | None = SECRET, exp: int = 900, alg: str = "HS256"
) -> str:
    now = int(time.time())
    claims = {"sub": "usr-matrix", "org": org, "role": role, "typ": "user", "iat": now, "exp": now + exp}
    return jwt.encode(claims, secret, algorithm=alg)


def signed(claims: dict[str, Any], exp: int = 900) -> str:
    """A token as corral mints it (HS256 with the world's secret)."""
    now = int(time.time())
    return jwt.encode({**claims, "iat": now, "exp": now + exp}, SECRET, algorithm="HS256")


@dataclass
class World:
    url: str
    org_id: str
    keys: dict[str, str]  # viewer, developer, admin, revoked, rival owner, owner -> raw key
    ids: dict[str, str] = field(default_factory=dict)  # sid, es, ps, exec, port
    http: httpx.Client = field(default_factory=httpx.Client)  # kept alive; no default credential
    subjects: dict[str, str] = field(default_factory=dict)  # owner, revoked -> key id; user -> user id
    tokens: dict[str, str] = field(default_factory=dict)  # minted once per column

    def token(self, cred: str) -> str:
        """The token of a token column, minted (by corral where a route mints it) once."""
        if cred not in self.tokens:
            org, owner_kid = self.org_id, self.subjects["owner"]
            if cred == "worker":
                self.tokens[cred] = self.owner("GET", f"/api/sandboxes/{self.ids['sid']}").json()["token"]
            elif cred == "other worker":
                self.tokens[cred] = self.owner("GET", f"/api/sandboxes/{self.ids['sandbox_id']}").json()[
                    "token"
                ]
            elif cred == "exchanged":
                self.tokens[cred] = self.http.post("/api/v1/auth/token", json={"api_key": KEY}).json()[
                    "token"
                ]
            elif cred == "read-only token":  # a user token narrowed to sandbox:read (the scopes claim)
                claims = {"sub": owner_kid, "kid": owner_kid, "org": org, "role": "owner", "typ": "user"}
                self.tokens[cred] = signed({**claims, "scopes": ["sandbox:read"]})
            elif cred == "user developer":
                claims = {"sub": self.subjects["user"], "org": org, "role": "developer", "typ": "user"}
                self.tokens[cred] = signed(claims)
            elif cred == "revoked key's worker":
                kid = self.subjects["revoked"]
                claims = {"sub": self.ids["sid"], "org": org, "role": "owner", "kid": kid, "typ": "worker"}
                self.tokens[cred] = signed(claims, exp=3600)
            else:
                raise AssertionError(cred)
        return self.tokens[cred]

    def credential(self, cred: str) -> str:
        """The raw credential a column presents ("" for none, the header for malformed)."""
        if cred == "none":
            return ""
        if cred == "malformed":
            return "Basic dXNlcjpwYXNz"
        if cred == "expired jwt":
            return user_token(self.org_id, "owner", exp=-60)
        if cred == "jwt alg none":
            return user_token(self.org_id, "owner", secret=None, alg="none")
        if cred == "jwt other secret":
            return user_token(self.org_id, "owner", secret="another-secret-of-enough-length-for-hs256!")
        return self.keys[cred] if cred in self.keys else self.token(cred)

    def headers(self, cred: str, *, bearer: bool = False) -> dict[str, str]:
        """Headers of a column: API keys as X-API-Key (or Bearer), JWTs as Bearer."""
        raw = self.credential(cred)
        if not raw:
            return {}
        if cred == "malformed":
            return {"Authorization": raw}
        if raw.startswith("ek_") and not bearer:
            return {"X-API-Key": raw}
        return {"Authorization": f"Bearer {raw}"}

    def owner(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A request with the owner's key."""
        return self.http.request(method, path, headers={"X-API-Key": KEY}, **kwargs)


async def _seed(settings: Settings) -> tuple[str, dict[str, str], dict[str, str]]:
    """Bootstraps the store and adds the keys and the user of every column; the org of
    KEY, the raw keys, and the ids of the owner's and the revoked key and the user."""
    core = await Core.open(
        settings, runtime=ProcessRuntime(settings.data_dir / "process-sandboxes"),
        templates=StaticTemplates(), reconcile=False,
    )  # fmt: skip
    try:
        org = (await core.auth.keys.org_by_name("default")).id
        keys = {"owner": KEY}
        for role in ("viewer", "developer", "admin"):
            keys[role] = (await core.auth.create_key(org, role, role)).raw
        revoked = await core.auth.create_key(org, "owner", "revoked")
        await core.auth.keys.revoke(org, revoked.key.id)
        keys["revoked"] = revoked.raw
        rival = await core.auth.keys.add_org(new_id("org"), "rival")
        keys["rival owner"] = (await core.auth.create_key(rival.id, "owner")).raw
        user = User(new_id("usr"), org, "dev@matrix.test", "Dev", "developer", datetime.now(UTC))
        await SqlUserStore(core.db).add(user)
        owner_kid = (await core.auth.authenticate_key(KEY)).key_id
        assert owner_kid is not None
        return org, keys, {"owner": owner_kid, "revoked": revoked.key.id, "user": user.id}
    finally:
        await core.close()


# a file server in the sandbox on a port the kernel chooses, written to argv[1] once listening
FILE_SERVER = (
    "import functools, http.server, os, sys\n"
    "handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory='/tmp')\n"
    "server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)\n"
    "with open(sys.argv[1] + '.tmp', 'w') as f:\n"
    "    f.write(str(server.server_port))\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "server.serve_forever()\n"
)


def _furnish(world: World) -> None:
    """The shared sandbox and what lives in it."""
    sid = world.owner("POST", "/api/sandboxes", json={}).json()["sandboxID"]
    base = f"/api/sandboxes/{sid}"
    world.ids["sid"] = sid
    sleeper = {"cmd": "sleep", "args": ["600"]}
    world.ids["es"] = world.owner("POST", f"{base}/exec", json=sleeper).json()["sessionID"]
    world.ids["ps"] = world.owner("POST", f"{base}/pty", json={}).json()["sessionID"]
    world.ids["exec"] = world.owner("POST", f"{base}/exec/run-async", json={"cmd": "true"}).json()["execId"]
    wrote = world.owner("PUT", f"{base}/files", params={"path": "/tmp/m.txt"}, content=b"matrix")
    assert wrote.status_code == 204
    port_file = f"/tmp/corral-matrix-{sid}.port"
    server = {"cmd": "python3", "args": ["-c", FILE_SERVER, port_file]}
    assert world.owner("POST", f"{base}/exec", json=server).status_code == 201
    eventually(lambda: world.owner("GET", f"{base}/files", params={"path": port_file}).status_code == 200, 10)
    world.ids["port"] = world.owner("GET", f"{base}/files", params={"path": port_file}).text
    assert world.owner("DELETE", f"{base}/files", params={"path": port_file}).status_code == 204
    # a sandbox of its own for checkpoints, restores and hibernation (they restart it)
    other = world.owner("POST", "/api/sandboxes", json={}).json()["sandboxID"]
    world.ids["sandbox_id"] = other
    made = world.owner("POST", f"/api/sandboxes/{other}/checkpoints", json={"name": "matrix"})
    world.ids["checkpoint_id"] = made.json()["id"]
    world.ids["name"] = "base"  # a built-in template


def serve_world(data_dir: Any) -> Iterator[World]:
    """Seed, serve, furnish; yield; remove every sandbox and stop."""
    sock = listening()
    settings = matrix_settings(data_dir, port_of(sock))
    org, keys, subjects = asyncio.run(_seed(settings))
    with served(settings, make_app(settings), sock, "corral-matrix") as url:
        world = World(url, org, keys, http=httpx.Client(base_url=url, timeout=30), subjects=subjects)
        try:
            _furnish(world)
            yield world
        finally:
            for key in (KEY, keys["rival owner"]):
                remove_sandboxes(url, key)
            world.http.close()


def matrix_settings(data_dir: Any, port: int) -> Settings:
    return make_settings(
        data_dir,
        port=port,
        jwt_secret=SECRET,
        rate_limit_api=0,
        rate_limit_xgen=0,
        rate_limit_runs=0,
        anthropic_api_key="sk-ant-matrix",  # agent runs' creates need one; no run reaches the model
        anthropic_base_url="http://127.0.0.1:9",
    )
