"""The gateway wakes a hibernated sandbox for a request allowed to reach it (and only
then); the sandbox comes back with fresh processes, so its servers must be started again."""

from __future__ import annotations

import httpx
import pytest

from tests.support.app import KEY
from tests.support.sockets import refused_port
from tests.unit.gateway.conftest import Server, start_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_an_allowed_request_wakes_a_hibernated_sandbox(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"{server.url}/api", headers={"X-API-Key": KEY}, timeout=30) as api:
        sid = (await api.post("/sandboxes", json={})).json()["sandboxID"]
        try:
            await api.post(f"/sandboxes/{sid}/hibernate")
            with refused_port() as nothing:
                async with httpx.AsyncClient(timeout=30) as anonymous:
                    refused = await anonymous.get(f"{server.url}/preview/{sid}/{nothing}/hello")
                assert refused.status_code == 401
                assert (await api.get(f"/sandboxes/{sid}")).json()["status"] == "hibernated"  # not woken

                woken = await api.get(f"{server.url}/preview/{sid}/{nothing}/hello")
                assert woken.status_code == 502  # running again, with fresh processes: nothing listens yet
            assert (await api.get(f"/sandboxes/{sid}")).json()["status"] == "running"
            port = await start_app(api, server.url, sid)  # the owner starts its server again
            assert (await api.get(f"{server.url}/preview/{sid}/{port}/hello")).status_code == 200
        finally:
            await api.delete(f"/sandboxes/{sid}")
