"""A create beyond a documented limit over HTTP: the OpenComputer envelope, the status,
the limit named, Retry-After where waiting helps, and no sandbox left half made."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.core import Core
from tests.support.app import KEY
from tests.support.conditions import eventually_async
from tests.unit.api.harness import new_key, serving


async def live_ids(core: Core) -> set[str]:
    return {sb.id for sb in await core.sandboxes.store.list_all(live_only=True)} | set(
        await core.runtime.list_ids()
    )


async def test_a_full_create_queue_is_429_with_retry_after_and_makes_nothing(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_creates=1, max_queued_creates=0) as (app, client):
        core: Core = app.state.core
        before = await live_ids(core)
        async with core.sandboxes.admission.queue.turn("another org"):  # the node's one create at work
            refused = await client.post("/api/sandboxes", json={})
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert "max_queued_creates" in refused.json()["error"]
            assert await live_ids(core) == before
        assert (await client.post("/api/sandboxes", json={})).status_code == 201  # room again


async def test_a_create_waits_its_turn_and_then_succeeds(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_creates=1, max_queued_creates=8) as (app, client):
        core: Core = app.state.core
        async with core.sandboxes.admission.queue.turn("another org"):
            waiting = asyncio.create_task(client.post("/api/sandboxes", json={}))
            queue = core.sandboxes.admission.queue
            await eventually_async(lambda: queue.waiting == 1, 10, "the create never queued")
            assert not waiting.done()
        assert (await waiting).status_code == 201


async def test_the_live_cap_and_the_memory_budget_are_409_naming_their_setting(tmp_path: Path) -> None:
    settings = {"max_live_sandboxes_per_org": 1, "max_promised_memory_mb": 1024}
    async with serving(tmp_path, **settings) as (app, client):
        core: Core = app.state.core
        assert (await client.post("/api/sandboxes", json={"memoryMB": 512})).status_code == 201
        before = await live_ids(core)
        capped = await client.post("/api/sandboxes", json={})
        assert capped.status_code == 409 and "max_live_sandboxes_per_org" in capped.json()["error"]
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        over = await client.post("/api/sandboxes", json={"memoryMB": 1024}, headers=rival)
        assert over.status_code == 409 and "max_promised_memory_mb" in over.json()["error"]
        assert await live_ids(core) == before


async def test_every_surface_answers_a_full_create_queue_429_with_retry_after(tmp_path: Path) -> None:
    """E2B's control plane and xgen's sandboxes, beside OpenComputer's above: each in its
    own envelope, the limit named, nothing made."""
    async with serving(tmp_path, max_concurrent_creates=1, max_queued_creates=0) as (app, client):
        core: Core = app.state.core
        before = await live_ids(core)
        async with core.sandboxes.admission.queue.turn("another org"):
            e2b = await client.post("/v2/sandboxes", json={"templateID": "base"})
            assert e2b.status_code == 429 and int(e2b.headers["Retry-After"]) >= 1
            assert e2b.json()["code"] == 429 and "max_queued_creates" in e2b.json()["message"]
            xgen = await client.post(
                "/api/v1/sandboxes", json={}, headers={"X-API-Key": "", "Authorization": f"ApiKey {KEY}"}
            )
            assert xgen.status_code == 429 and int(xgen.headers["Retry-After"]) >= 1
            assert xgen.json()["code"] == "QUOTA_EXCEEDED" and "max_queued_creates" in xgen.json()["error"]
            assert await live_ids(core) == before
