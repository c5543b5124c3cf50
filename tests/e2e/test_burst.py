"""A burst of creates at once through the real server on runc: every one succeeds (the
create queue lets a few work at once, the rest wait their turn) and runs a command."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e.conftest import Server

BURST = 20


async def test_twenty_creates_at_once_all_succeed_and_run(server: Server) -> None:
    async with httpx.AsyncClient(
        base_url=f"{server.url}/api", headers={"X-API-Key": server.key}, timeout=120
    ) as client:

        async def create_and_run() -> str:
            # small disks: the node promises its free disk space, 2 GiB a default sandbox
            created = await client.post("/sandboxes", json={"templateID": "base", "diskMB": 256})
            assert created.status_code == 201, created.text
            sandbox_id = str(created.json()["sandboxID"])
            ran = await client.post(
                f"/sandboxes/{sandbox_id}/exec/run", json={"cmd": "echo", "args": [sandbox_id]}
            )
            assert ran.status_code == 200 and ran.json()["stdout"] == f"{sandbox_id}\n", ran.text
            return sandbox_id

        outcomes = await asyncio.gather(*(create_and_run() for _ in range(BURST)), return_exceptions=True)
        made = [o for o in outcomes if isinstance(o, str)]
        try:
            assert len(set(made)) == BURST, [o for o in outcomes if not isinstance(o, str)][:3]
        finally:
            await asyncio.gather(*(client.delete(f"/sandboxes/{sandbox_id}") for sandbox_id in made))
