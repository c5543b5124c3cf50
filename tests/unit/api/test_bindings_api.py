"""Service bindings over HTTP (``/api/bindings``: who may manage them, what answers
show), and used by a sandbox of the process runtime through the loopback forwarder:
the call reaches a real upstream with the secret added and lands in the trail."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.core import Core
from corral.errors import InvalidInput
from tests.support.upstream import Upstream
from tests.unit.api.harness import new_key, serving

SECRET = "sk-live-never-shown-0123456789"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(header="Authorization", secret=f"Bearer {SECRET}").start()
    yield server
    server.stop()


def body(upstream: Upstream, name: str = "model") -> dict[str, str]:
    return {
        "name": name,
        "url": upstream.url + "/v1",
        "header": "Authorization",
        "secret": f"Bearer {SECRET}",
    }


async def test_owners_and_admins_manage_bindings_and_no_answer_shows_a_secret(
    tmp_path: Path, upstream: Upstream
) -> None:
    async with serving(tmp_path) as (app, client):
        added = await client.post("/api/bindings", json=body(upstream))
        assert added.status_code == 201, added.text
        assert set(added.json()) == {"name", "url", "header", "createdAt"}
        assert added.json()["url"] == upstream.url + "/v1"
        admin = {"X-API-Key": await new_key(app, "admin")}
        listed = await client.get("/api/bindings", headers=admin)
        assert [b["name"] for b in listed.json()] == ["model"]
        for answer in (added, listed):
            assert SECRET not in answer.text
        for role in ("developer", "viewer"):
            key = {"X-API-Key": await new_key(app, role)}
            assert (await client.get("/api/bindings", headers=key)).status_code == 403
            assert (
                await client.post("/api/bindings", json=body(upstream, "x"), headers=key)
            ).status_code == 403
        stranger = {"X-API-Key": await new_key(app, "owner", "other-org")}
        assert (await client.get("/api/bindings", headers=stranger)).json() == []
        assert (await client.delete("/api/bindings/model", headers=stranger)).status_code == 404

        assert (await client.post("/api/bindings", json=body(upstream))).status_code == 409
        for field, value in [
            ("url", "file:///etc/passwd"),
            ("header", "Host"),
            ("name", "Bad Name"),
            ("secret", ""),
        ]:
            bad = await client.post("/api/bindings", json={**body(upstream, "other"), field: value})
            assert bad.status_code == 400 and field in bad.json()["error"], bad.text
        audit = (await client.get("/api/audit", params={"kind": "binding_added"})).json()
        assert [e["data"]["binding"] for e in audit["events"]] == ["model"]
        assert SECRET not in json.dumps(audit)

        assert (await client.delete("/api/bindings/model", headers=admin)).status_code == 204
        assert (await client.get("/api/bindings")).json() == []


def fetch(url: str) -> str:
    """A python3 program a sandbox runs: GET ``url``, print its status and body."""
    code = (
        "import urllib.request, urllib.error\n"
        f"try:\n  r = urllib.request.urlopen({url!r}, timeout=20); print(r.status, r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n  print(e.code, e.read().decode())\n"
    )
    return base64.b64encode(code.encode()).decode()


async def test_a_sandbox_calls_its_binding_through_the_forwarder(tmp_path: Path, upstream: Upstream) -> None:
    async with serving(tmp_path) as (app, client):
        core: Core = app.state.core
        assert (await client.post("/api/bindings", json=body(upstream))).status_code == 201
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        org = (await core.sandboxes.store.find(sid)).org_id  # type: ignore[union-attr]
        checked = await core.bindings.check(org, ["model", "model"])
        assert [b.name for b in checked] == ["model"]  # each once
        with pytest.raises(InvalidInput) as missing:
            await core.bindings.check(org, ["missing"])
        assert missing.value.field == "serviceBindings"
        with pytest.raises(InvalidInput) as unknown:
            await core.bindings.open_for(org, sid, ["model", "missing"])
        assert unknown.value.field == "serviceBindings"
        urls = await core.bindings.open_for(org, sid, ["model"])
        assert list(urls) == ["model"] and urls["model"].startswith("http://127.0.0.1:")

        async def run(url: str) -> tuple[int, dict[str, object]]:
            program = f"echo {fetch(url)} | base64 -d | python3 -"
            done = await client.post(
                f"/api/sandboxes/{sid}/exec/run", json={"cmd": "sh", "args": ["-c", program]}
            )
            status, _, text = done.json()["stdout"].strip().partition(" ")
            return int(status), json.loads(text)

        status, answer = await run(urls["model"] + "/chat/completions?stream=1")
        assert status == 200 and answer["authorized"] is True
        assert (answer["path"], answer["query"]) == ("/v1/chat/completions", "stream=1")
        await core.bindings.close_for(sid)
        assert (await run(urls["model"] + "/chat"))[0] == 404
        trail = (await client.get(f"/api/sandboxes/{sid}/audit", params={"order": "oldest"})).json()
        calls = [e["data"] for e in trail["events"] if e["kind"] == "binding_invoked"]
        assert [(c["binding"], c["method"], c["path"], c["status"]) for c in calls] == [
            ("model", "GET", "/chat/completions", 200)
        ]
        assert SECRET not in json.dumps(trail)
        assert len(upstream.seen) == 1


async def test_no_binding_is_opened_without_names(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, _client):
        core: Core = app.state.core
        assert await core.bindings.open_for("org-x", "sb-aaaaaaaaaaaa", []) == {}
        with pytest.raises(InvalidInput):
            await core.bindings.open_for("org-x", "sb-aaaaaaaaaaaa", ["Not-A-Name"])
        assert core.forwarder is not None and core.forwarder.port > 0  # the process runtime's, on loopback
