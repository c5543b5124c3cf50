"""The admission queue of code sessions through the app (process runtime): over
``max_concurrent_sessions`` a session waits in ``pending`` and starts once another
ends, in order; a pending session deleted never starts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio

from tests.support.app import KEY, make_app, make_settings
from tests.support.conditions import eventually_async

WAIT_FOR = (
    "import os, time\nwhile not os.path.exists({path!r}):\n    time.sleep(0.01)\nenclave.result({name!r})\n"
)


@pytest_asyncio.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(make_settings(tmp_path, max_concurrent_sessions=1))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers=headers
        ) as c:
            yield c


async def _phase(client: httpx.AsyncClient, sid: str) -> str:
    return str((await client.get(f"/sessions/{sid}")).json()["phase"])


async def _trail(client: httpx.AsyncClient, sid: str) -> list[str]:
    return [e["type"] for e in (await client.get(f"/sessions/{sid}/audit")).json()["events"]]


async def test_sessions_over_the_ceiling_wait_in_order(client: httpx.AsyncClient, tmp_path: Path) -> None:
    gate = tmp_path / f"gate-{secrets.token_hex(4)}"
    ids: list[str] = []
    for name in ("first", "second", "third"):
        created = await client.post("/sessions", json={"code": WAIT_FOR.format(path=str(gate), name=name)})
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])

    async def running(sid: str) -> bool:
        return await _phase(client, sid) == "running"

    await eventually_async(lambda: running(ids[0]), 30, "the first session never ran")
    assert [await _phase(client, sid) for sid in ids[1:]] == ["pending", "pending"]
    deleted = (await client.delete(f"/sessions/{ids[2]}")).json()
    assert (
        deleted["phase"] == "torn_down" and deleted["outcome"] == "killed" and deleted["error"] == "deleted"
    )
    assert "sandbox_started" not in await _trail(client, ids[2])  # it never started
    gate.write_text("go")
    results: list[Any] = []
    for sid in ids[:2]:
        await eventually_async(lambda sid=sid: _ended(client, sid), 30, f"{sid} did not end")  # type: ignore[misc]
        results.append((await client.get(f"/sessions/{sid}/result")).json()["result"])
    assert results == ["first", "second"]


async def _ended(client: httpx.AsyncClient, sid: str) -> bool:
    return await _phase(client, sid) == "torn_down"
