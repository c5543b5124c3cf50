"""An org runs at most ``build_max_running_per_org`` template builds at once: beyond,
``POST /api/templates`` is 429 (retry later) and nothing is recorded."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import pytest

from corral.domain import Template
from tests.support.conditions import eventually_async
from tests.unit.api.conftest import Api

pytestmark = pytest.mark.asyncio(loop_scope="module")


class HeldBuilder:
    """Builds that last until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = 0

    async def build(
        self, name: str, dockerfile: str, log: Callable[[str], None], usable: Mapping[str, str]
    ) -> Template:
        self.started += 1
        await self.release.wait()
        return Template(name, "d" * 64, "/", datetime.now(UTC))

    async def remove(self, name: str) -> None:
        return None


async def test_an_org_runs_at_most_its_cap_of_builds_at_once(api: Api) -> None:
    c = api.client
    service = api.core.template_builds
    held = HeldBuilder()
    service.builder, service.max_running_per_org = held, 2
    try:
        running = [
            asyncio.ensure_future(
                c.post("/api/templates", json={"name": f"held{i}", "dockerfile": "FROM base"})
            )
            for i in range(2)
        ]
        await eventually_async(lambda: held.started == 2, 10)
        third = await asyncio.wait_for(
            c.post("/api/templates", json={"name": "held2", "dockerfile": "FROM base"}), 5
        )
        assert third.status_code == 429 and "build_max_running_per_org" in third.json()["error"]
        assert (await c.get("/api/templates/held2")).status_code == 404  # nothing recorded
        held.release.set()
        assert [(await r).status_code for r in running] == [201, 201]
        again = await c.post("/api/templates", json={"name": "held2", "dockerfile": "FROM base"})
        assert again.status_code == 201 and again.json()["status"] == "ready"
    finally:
        held.release.set()
        for name in ("held0", "held1", "held2"):
            await c.delete(f"/api/templates/{name}")
        service.builder, service.max_running_per_org = None, 0
