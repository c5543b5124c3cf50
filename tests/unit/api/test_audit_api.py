"""The audit trail over HTTP: what the routes answer, paging, and that no route can
change it; ``corral audit`` against a real server."""

from __future__ import annotations

from pathlib import Path

import httpx
from typer.testing import CliRunner

from corral.cli.main import app as cli
from tests.support.app import KEY
from tests.unit.api.conftest import Live
from tests.unit.api.harness import new_key, serving


async def test_records_carry_the_key_and_client_id_and_page_both_ways(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        me = {"X-Client-Id": "ci-runner-4"}
        sid = (await client.post("/api/sandboxes", json={}, headers=me)).json()["sandboxID"]
        base = f"/api/sandboxes/{sid}"
        await client.post(f"{base}/exec/run", json={"cmd": "sh", "args": ["-c", "exit 2"]}, headers=me)
        await client.put(f"{base}/files", params={"path": "notes.txt"}, content=b"hi", headers=me)
        await client.delete(f"{base}/files", params={"path": "notes.txt"}, headers=me)

        newest = (await client.get(f"{base}/audit")).json()
        kinds = [e["kind"] for e in newest["events"]]
        assert kinds == ["file_removed", "file_written", "exec_ended", "exec_started", "sandbox_created"]
        assert newest["nextCursor"] is None
        for event in newest["events"]:
            assert (event["sandboxID"], event["keyID"], event["clientID"]) == (
                sid,
                KEY.split("_")[1],
                "ci-runner-4",
            )
            assert event["at"].endswith("Z")
        assert newest["events"][2]["data"]["exit_code"] == 2
        assert newest["events"][0]["data"] == {"path": "/root/notes.txt"}

        walked, cursor = [], None
        while True:
            params = {"limit": "2", "order": "oldest", **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"{base}/audit", params=params)).json()
            walked += [e["kind"] for e in page["events"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert walked == kinds[::-1]

        org = (await client.get("/api/audit", params={"kind": "exec_ended", "sandboxID": sid})).json()
        assert [e["kind"] for e in org["events"]] == ["exec_ended"]


async def test_bad_paging_is_400_naming_the_field_and_other_orgs_are_404(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        for params, field in (
            ({"limit": "0"}, "limit"),
            ({"cursor": "abc"}, "cursor"),
            ({"order": "up"}, "order"),
        ):
            r = await client.get(f"/api/sandboxes/{sid}/audit", params=params)
            assert r.status_code == 400 and r.json()["error"].startswith(field), (params, r.text)
        bad_client = await client.get("/api/audit", headers={"X-Client-Id": "x" * 200})
        assert bad_client.status_code == 400 and bad_client.json()["error"].startswith("X-Client-Id")
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        assert (await client.get(f"/api/sandboxes/{sid}/audit", headers=rival)).status_code == 404
        assert (await client.get("/api/audit", params={"sandboxID": sid}, headers=rival)).status_code == 404
        assert (await client.get("/api/audit", headers=rival)).json()["events"] == []


async def test_the_org_trail_by_actor_a_key_or_a_client_id(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        developer = await new_key(app, "developer")
        mine = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        theirs = (await client.post("/api/sandboxes", json={}, headers={"X-API-Key": developer})).json()[
            "sandboxID"
        ]
        await client.put(
            f"/api/sandboxes/{mine}/files",
            params={"path": "n.txt"},
            content=b"x",
            headers={"X-Client-Id": "ci-7"},
        )
        by_key = (await client.get("/api/audit", params={"actor": developer.split("_")[1]})).json()["events"]
        assert [(e["kind"], e["sandboxID"]) for e in by_key] == [("sandbox_created", theirs)]
        by_client = (await client.get("/api/audit", params={"actor": "ci-7"})).json()["events"]
        assert [(e["kind"], e["clientID"]) for e in by_client] == [("file_written", "ci-7")]
        assert (await client.get("/api/audit", params={"actor": "nobody"})).json()["events"] == []


async def test_no_route_changes_the_trail(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        before = (await client.get("/api/audit")).json()["events"]
        assert before
        first = before[-1]["id"]
        for path in (
            f"/api/sandboxes/{sid}/audit",
            "/api/audit",
            f"/api/audit/{first}",
            f"/sandboxes/{sid}/audit",
        ):
            for method in ("POST", "PUT", "PATCH", "DELETE"):
                r = await client.request(method, path, json={"kind": "forged"})
                assert r.status_code in (404, 405), (method, path, r.status_code)
        audit_ops = {
            method for path, ops in app.openapi()["paths"].items() if "audit" in path for method in ops
        }
        assert audit_ops == {"get"}
        assert (await client.get("/api/audit")).json()["events"] == before


def test_the_cli_shows_a_sandbox_trail(live: Live) -> None:
    with httpx.Client(base_url=live.url, headers={"X-API-Key": KEY}) as c:
        sid = c.post("/api/sandboxes", json={}).json()["sandboxID"]
        c.post(f"/api/sandboxes/{sid}/exec/run", json={"cmd": "echo", "args": ["audited"]})
    result = CliRunner().invoke(cli, ["audit", sid, "--oldest", "--url", live.url, "--api-key", KEY])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "KIND", "SANDBOX", "KEY", "CLIENT", "DETAILS"]
    assert [line.split()[2] for line in lines[1:]] == ["sandbox_created", "exec_started", "exec_ended"]
    assert '"command":"echo audited"' in result.stdout
    everything = CliRunner().invoke(
        cli, ["audit", "--all", "--kind", "exec_ended", "--url", live.url, "--api-key", KEY]
    )
    assert (
        everything.exit_code == 0
        and "exec_ended" in everything.stdout
        and "exec_started" not in everything.stdout
    )
    refused = CliRunner().invoke(
        cli, ["audit", sid, "--url", live.url, "--api-key", "ek_nosuchkey0_" + "x" * 32]
    )
    assert refused.exit_code == 1 and "invalid API key" in refused.stderr
