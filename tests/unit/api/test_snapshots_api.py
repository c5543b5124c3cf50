"""The OpenComputer surface's checkpoint, patch, hibernate/wake, keepalive and template
routes over the process runtime: shapes, statuses, the async-wake 503, SSE events."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from corral.domain import Template
from corral.errors import RuntimeFailure
from tests.support.conditions import eventually_async
from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def new_sandbox(api: Api) -> str:
    created = await api.client.post("/api/sandboxes", json={"timeout": 0})
    assert created.status_code == 201, created.text
    return str(created.json()["sandboxID"])


async def test_checkpoint_routes_validate_and_answer_the_spec_shapes(api: Api) -> None:
    sid = await new_sandbox(api)
    c = api.client
    for bad in ("", "x" * 129):
        r = await c.post(f"/api/sandboxes/{sid}/checkpoints", json={"name": bad})
        assert r.status_code == 400 and r.json()["error"].startswith("name")
    assert (await c.post(f"/api/sandboxes/{sid}/checkpoints", json={})).status_code == 400
    r = await c.post(f"/api/sandboxes/{sid}/checkpoints", json={"name": "one", "kind": "disk_only"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) >= {"id", "sandboxID", "name", "status", "sizeBytes", "createdAt"}
    assert body["id"].startswith("cp-") and body["status"] == "processing" and body["sandboxID"] == sid
    r = await c.post(f"/api/sandboxes/{sid}/checkpoints", json={"name": "one"})
    assert r.status_code == 409 and "one" in r.json()["error"]
    listed = (await c.get(f"/api/sandboxes/{sid}/checkpoints")).json()
    assert [cp["name"] for cp in listed] == ["one"]
    cp = body["id"]
    patch = await c.post(f"/api/sandboxes/checkpoints/{cp}/patches", json={"script": "echo hi > p"})
    assert patch.status_code == 201
    assert patch.json()["patch"]["sequence"] == 1 and patch.json()["patch"]["strategy"] == "on_wake"
    fork = await c.post(f"/api/sandboxes/from-checkpoint/{cp}", json={"timeout": 0, "envs": {"X": "1"}})
    assert fork.status_code == 201, fork.text
    forked = fork.json()
    assert forked["status"] == "running" and forked["token"] and forked["sandboxID"] != sid
    assert forked["patches"][0]["status"] == "applied" and "error" not in forked
    assert (await c.post(f"/api/sandboxes/{sid}/checkpoints/{cp}/restore")).json() == {}
    pa = patch.json()["patch"]["id"]
    assert (await c.delete(f"/api/sandboxes/checkpoints/{cp}/patches/{pa}")).status_code == 204
    assert (await c.delete(f"/api/sandboxes/checkpoints/{cp}/patches/{pa}")).status_code == 404
    assert (await c.delete(f"/api/sandboxes/{sid}/checkpoints/{cp}")).status_code == 204
    assert (await c.post("/api/sandboxes/from-checkpoint/cp-0000000000000000", json={})).status_code == 404
    description = (await c.get("/openapi.json")).json()["paths"]["/api/sandboxes/{sandbox_id}/checkpoints"]
    assert "Running processes are not captured" in description["post"]["description"]


async def test_hibernate_wake_keepalive_and_the_async_wake_503(api: Api) -> None:
    sid = await new_sandbox(api)
    c = api.client
    r = await c.post(f"/api/sandboxes/{sid}/hibernate")
    assert r.status_code == 200
    assert r.json() == {
        "sandboxID": sid,
        "hibernationKey": f"sandboxes/{sid}/disk",
        "sizeBytes": r.json()["sizeBytes"],
        "status": "hibernated",
    }
    assert (await c.get(f"/api/sandboxes/{sid}")).json()["status"] == "hibernated"
    assert (await c.post(f"/api/sandboxes/{sid}/keepalive")).status_code == 204
    waking = await c.get(
        f"/api/sandboxes/{sid}/files", params={"path": "/"}, headers={"X-OSB-Async-Wake": "1"}
    )
    assert waking.status_code == 503 and waking.json()["waking"] is True and waking.json()["error"]
    assert waking.headers["retry-after"] == "1"

    async def woken() -> bool:
        return (await c.get(f"/api/sandboxes/{sid}")).json()["status"] == "running"

    await eventually_async(woken, 10, "never woke")  # the wake goes on in the background
    again = await c.post(
        f"/api/sandboxes/{sid}/exec/run",
        json={"cmd": "echo", "args": ["up"]},
        headers={"X-OSB-Async-Wake": "1"},
    )
    assert again.status_code == 200 and again.json()["stdout"] == "up\n"
    await c.post(f"/api/sandboxes/{sid}/hibernate")
    plain = await c.post(f"/api/sandboxes/{sid}/exec/run", json={"cmd": "true"})  # waits for the wake
    assert plain.status_code == 200
    await c.post(f"/api/sandboxes/{sid}/hibernate")
    woken = await c.post(f"/api/sandboxes/{sid}/wake", json={"timeout": 0})
    assert woken.status_code == 200 and woken.json()["status"] == "running"
    assert (await c.post(f"/api/sandboxes/{sid}/keepalive")).status_code == 204


class FakeBuilder:
    """Builds succeed when the Dockerfile says so, and log three lines."""

    async def build(
        self, name: str, dockerfile: str, log: Callable[[str], None], usable: Mapping[str, str]
    ) -> Template:
        for line in ("STEP 1/2: FROM base", "STEP 2/2: RUN true", "COMMIT"):
            log(line)
        if "fail" in dockerfile:
            raise RuntimeFailure("the build failed: RUN false: exit status 1")
        return Template(name, "d" * 64, "/", datetime.now(UTC))

    async def remove(self, name: str) -> None:
        return None


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        kind = data = ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if kind:
            found.append((kind, json.loads(data)))
    return found


async def test_template_routes_json_sse_failures_and_404(api: Api) -> None:
    c = api.client
    assert (
        await c.post("/api/templates", json={"name": "web", "dockerfile": "FROM base"})
    ).status_code == 503
    listed = (await c.get("/api/templates")).json()
    assert {"base", "python", "nodejs"} <= {t["name"] for t in listed}
    assert (await c.get("/api/templates/nope")).status_code == 404
    assert (await c.delete("/api/templates/base")).status_code == 409
    service = api.core.template_builds
    service.builder = FakeBuilder()
    try:
        r = await c.post("/api/templates", json={"name": "web", "dockerfile": "FROM base\nRUN true\n"})
        assert (
            r.status_code == 201
            and r.json()["status"] == "ready"
            and r.json()["templateID"].startswith("tpl-")
        )
        headers = {"Accept": "text/event-stream"}
        async with c.stream(
            "POST", "/api/templates", json={"name": "web2", "dockerfile": "FROM base"}, headers=headers
        ) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
            got = events((await s.aread()).decode())
        assert [k for k, _ in got] == ["build_log"] * 3 + ["result"]
        assert got[1][1] == {"step": 2, "type": "log", "message": "STEP 2/2: RUN true"}
        assert got[-1][1]["name"] == "web2" and got[-1][1]["status"] == "ready"
        async with c.stream(
            "POST", "/api/templates", json={"name": "bad", "dockerfile": "fail"}, headers=headers
        ) as s:
            got = events((await s.aread()).decode())
        assert got[-1] == ("error", {"error": "the build failed: RUN false: exit status 1"})
        failed = (await c.get("/api/templates/bad")).json()
        assert failed["status"] == "failed" and "exit status 1" in failed["error"]
        bad = await c.post(
            "/api/templates", json={"name": "Bad Name", "dockerfile": "FROM base"}, headers=headers
        )
        assert bad.status_code == 400 and bad.json()["error"].startswith("name")
        assert (await c.delete("/api/templates/web")).status_code == 204
        assert (await c.get("/api/templates/web")).status_code == 404
    finally:
        service.builder = None


async def test_worker_token_reaches_keepalive_but_not_checkpoints(api: Api) -> None:
    sid = await new_sandbox(api)
    token = (await api.client.get(f"/api/sandboxes/{sid}")).json()["token"]
    async with httpx.AsyncClient(transport=api.client._transport, base_url="http://corral.test") as worker:
        auth = {"Authorization": f"Bearer {token}"}
        assert (await worker.post(f"/sandboxes/{sid}/keepalive", headers=auth)).status_code == 204
        r = await worker.post(f"/sandboxes/{sid}/checkpoints", json={"name": "x"}, headers=auth)
        assert r.status_code in (404, 405)
