"""The kill switch over HTTP: creates and the gateway answer 503, globally or for one
org, flipped in memory or with ``corral killswitch`` on the store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from corral.cli.main import app as cli
from corral.core import Core
from tests.support.conditions import eventually_async
from tests.unit.api.harness import new_key, serving

runner = CliRunner()


async def test_creates_and_the_gateway_answer_503_while_engaged(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        core: Core = app.state.core
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        gateway = f"/preview/{sid}/9/"

        core.kill_switch.engage()
        refused = await client.post("/api/sandboxes", json={})
        assert refused.status_code == 503 and "kill switch" in refused.json()["error"]
        assert (await client.post("/api/sandboxes", json={}, headers=rival)).status_code == 503
        assert (await client.get(gateway)).status_code == 503
        assert (await client.get(f"/api/sandboxes/{sid}")).status_code == 200  # the rest works
        core.kill_switch.release()

        core.kill_switch.engage((await core.auth.keys.org_by_name("default")).id)
        assert (await client.post("/api/sandboxes", json={})).status_code == 503
        assert (await client.get(gateway)).status_code == 503
        assert (await client.post("/api/sandboxes", json={}, headers=rival)).status_code == 201


async def test_the_cli_switch_reaches_a_running_server(tmp_path: Path) -> None:
    async with serving(tmp_path, kill_switch_refresh_s=0.05) as (app, client):
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        switch = app.state.core.kill_switch
        rival_org = (await app.state.core.auth.keys.org_by_name("rival")).id

        async def refreshed(globally: bool, for_rival: bool) -> None:
            """Until the server's refresher has read what the CLI wrote."""

            def seen() -> bool:
                return (switch.engaged(), switch.engaged(rival_org)) == (globally, for_rival)

            await eventually_async(seen, 10, "the server never read the switch from the store")

        async def corral(*args: str) -> str:
            result = await asyncio.to_thread(runner.invoke, cli, [*args, "--data-dir", str(tmp_path)])
            assert result.exit_code == 0, result.output
            return result.stdout

        assert (
            await corral("killswitch", "on", "--org", "rival", "--reason", "abuse")
            == "kill switch on for org rival\n"
        )
        assert "org rival" in await corral("killswitch", "status")
        await refreshed(globally=False, for_rival=True)
        assert (await client.post("/api/sandboxes", json={}, headers=rival)).status_code == 503
        assert (await client.post("/api/sandboxes", json={})).status_code == 201
        await corral("killswitch", "on")
        await refreshed(globally=True, for_rival=True)
        assert (await client.post("/api/sandboxes", json={})).status_code == 503
        await corral("killswitch", "off")
        await corral("killswitch", "off", "--org", "rival")
        assert await corral("killswitch", "status") == "no kill switch is on\n"
        await refreshed(globally=False, for_rival=False)
        assert (await client.post("/api/sandboxes", json={}, headers=rival)).status_code == 201
