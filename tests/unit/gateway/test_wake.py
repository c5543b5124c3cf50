"""The gateway wakes a hibernated sandbox for a request allowed to reach it (and only
then); the sandbox comes back with fresh processes, so its servers must be started again.
A paused one is resumed, its servers as they were: by a request, and by a message on a
WebSocket relayed since before the pause."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import websockets

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


async def test_a_request_and_a_relayed_message_resume_a_paused_sandbox(server: Server) -> None:
    async with httpx.AsyncClient(base_url=f"{server.url}/api", headers={"X-API-Key": KEY}, timeout=30) as api:
        sid = (await api.post("/sandboxes", json={})).json()["sandboxID"]
        try:
            port = await start_app(api, server.url, sid)
            assert (await api.post(f"/sandboxes/{sid}/pause")).json()["status"] == "paused"
            page = await api.get(f"{server.url}/preview/{sid}/{port}/hello")
            assert page.status_code == 200  # the same server: not started again
            assert (await api.get(f"/sandboxes/{sid}")).json()["status"] == "running"
            url = f"ws://127.0.0.1:{server.port}/preview/{sid}/{port}/ws"
            async with websockets.connect(url, additional_headers={"X-API-Key": KEY}) as ws:
                await ws.send("before")
                assert await asyncio.wait_for(ws.recv(), 5) == "before"
                assert (await api.post(f"/sandboxes/{sid}/pause")).json()["status"] == "paused"
                await ws.send("after")
                assert await asyncio.wait_for(ws.recv(), 10) == "after"
            assert (await api.get(f"/sandboxes/{sid}")).json()["status"] == "running"
        finally:
            await api.delete(f"/sandboxes/{sid}")
