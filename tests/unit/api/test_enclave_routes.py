"""The Enclave surface's edges through the app (process runtime): a wrong method or an
unknown path under ``/sessions`` in the surface's own envelope, an unknown service
binding refused before anything starts, and two sessions at once each with a place of
its own (the process runtime's sandboxes share the host's /tmp), removed at its end."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from tests.support.app import KEY, make_app, make_settings
from tests.support.conditions import eventually_async

WAIT_FOR = "import os, time\nwhile not os.path.exists({path!r}):\n    time.sleep(0.01)\nprint('done')\n"


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(make_settings(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers=headers
        ) as c:
            yield c


async def test_a_wrong_method_or_path_is_answered_in_the_surface_envelope(client: httpx.AsyncClient) -> None:
    answer = await client.patch("/sessions/se_x")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "DELETE, GET"
    body = answer.json()
    assert body["statusCode"] == 405 and body["error"] == "Method Not Allowed" and body["field"] is None
    assert "PATCH" in body["message"] and "/sessions/se_x" in body["message"]

    answer = await client.put("/sessions")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, POST"
    assert answer.json()["statusCode"] == 405

    answer = await client.get("/sessions/se_x/nothing/here")
    assert answer.status_code == 404
    body = answer.json()
    assert body["statusCode"] == 404 and body["error"] == "Not Found"
    assert "/sessions/se_x/nothing/here" in body["message"]
    # the routes themselves still answer
    assert (await client.get("/sessions/se_x")).json()["statusCode"] == 404
    assert (await client.get("/sessions")).status_code == 200


async def test_an_unknown_binding_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    answer = await client.post("/sessions", json={"code": "print(1)", "serviceBindings": ["nope"]})
    assert answer.status_code == 400
    assert answer.json()["field"] == "serviceBindings" and "nope" in answer.json()["message"]
    listed = (await client.get("/sessions")).json()["sessions"]
    assert listed == []  # nothing was made


async def test_sessions_at_once_have_places_of_their_own(client: httpx.AsyncClient, tmp_path: Path) -> None:
    gate = tmp_path / f"gate-{secrets.token_hex(4)}"
    waiting = await client.post("/sessions", json={"code": WAIT_FOR.format(path=str(gate))})
    assert waiting.status_code == 201, waiting.text
    first = waiting.json()["id"]

    async def in_phase(sid: str, phase: str) -> bool:
        return bool((await client.get(f"/sessions/{sid}")).json()["phase"] == phase)

    await eventually_async(lambda: in_phase(first, "running"), 30, "the first session never ran")
    trail = (await client.get(f"/sessions/{first}/audit")).json()["events"]
    place = Path("/tmp/.enclave") / next(e["sandbox"] for e in trail if e["type"] == "sandbox_started")
    assert (place / "main.py").is_file()  # the process runtime's sandboxes share the host's /tmp
    second = (await client.post("/sessions", json={"code": "enclave.result('second')"})).json()["id"]
    await eventually_async(lambda: in_phase(second, "torn_down"), 30, "the second session never ended")
    assert (await client.get(f"/sessions/{second}/result")).json()["result"] == "second"
    gate.touch()
    await eventually_async(lambda: in_phase(first, "torn_down"), 30, "the first session never ended")
    result = (await client.get(f"/sessions/{first}/result")).json()
    assert result["stdout"] == "done\n" and result["result"] is None  # not the other's
    assert not place.exists()  # removed once its result was read
