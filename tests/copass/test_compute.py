"""copass-core (the real client, as pinned) drives corral's Copass compute surface and
reaches servers in sandboxes through corral's gateway: a real ``corral serve`` on runc,
real HTTP, WebSocket and browser clients (fixtures in conftest.py; the server in
server_in_sandbox.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from copass_core import ApiKeyAuth, CopassClient
from copass_core.http.errors import CopassApiError
from websockets.asyncio.client import connect

from tests.copass.conftest import CAP, Org, Server
from tests.support.browser import CHROMIUM, chromium
from tests.support.conditions import eventually_async

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]
NS = "copass-storage-1"
PORT = 8000
SERVER = (Path(__file__).parent / "server_in_sandbox.py").read_text()


def compute_of(server: Server, key: str) -> Any:
    return CopassClient(auth=ApiKeyAuth(key=key), api_url=server.url).compute


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(copass_server: Server, alpha: Org) -> AsyncIterator[Any]:
    """A session of alpha's whose sandbox runs server_in_sandbox.py on ``PORT``."""
    compute = compute_of(copass_server, alpha.key)
    session = await compute.create_session(NS, template="base", timeout_seconds=1800)
    wrote = await compute.exec(NS, session.session_id, cmd=["sh", "-c", "cat > /tmp/server.py"], stdin=SERVER)
    assert wrote.exit_code == 0, wrote.stderr
    started = await compute.exec(
        NS,
        session.session_id,
        cmd=["sh", "-c", f"setsid python3 /tmp/server.py {PORT} >/tmp/server.log 2>&1 </dev/null &"],
    )
    assert started.exit_code == 0, started.stderr

    async def listening() -> bool:
        return (await session.fetch(PORT, "/echo")).status_code == 200

    await eventually_async(listening, 60, "the server in the sandbox never answered through the gateway")
    yield session
    await compute.stop_session(NS, session.session_id)


async def test_templates_sessions_exec_list_health_stop(copass_server: Server, alpha: Org) -> None:
    compute = compute_of(copass_server, alpha.key)
    templates = (await compute.list_templates(NS)).templates
    assert "base" in {t.name for t in templates}

    session = await compute.create_session(
        NS, template="base", env_vars={"GREETING": "hello"}, timeout_seconds=900, metadata={"run": "e2e"}
    )
    assert (session.status, session.template, session.metadata) == ("running", "base", {"run": "e2e"})
    assert session.gateway is not None and session.gateway.base_url == copass_server.url

    fed = await compute.exec(
        NS, session.session_id, cmd=["sh", "-c", 'tr a-z A-Z; echo "$GREETING" >&2'], stdin="abc"
    )
    assert (fed.stdout, fed.stderr, fed.exit_code, fed.truncated) == ("ABC", "hello\n", 0, False)
    assert (await compute.exec(NS, session.session_id, cmd=["sh", "-c", "exit 3"])).exit_code == 3
    slow = await compute.exec(NS, session.session_id, cmd=["sleep", "60"], timeout_seconds=1)
    assert slow.exit_code == 124 and 900 <= slow.elapsed_ms < 20_000
    flood = await compute.exec(NS, session.session_id, cmd=["sh", "-c", "yes 0123456789 | head -c 12000000"])
    assert flood.truncated and len(flood.stdout) == 10 * 1024 * 1024 and flood.exit_code == 0

    health = await compute.session_health(NS, session.session_id)
    assert health.status == "ready" and health.last_activity_at > session.last_activity_at

    second = await compute.create_session(NS, template="base")
    active = [s.session_id for s in (await compute.list_sessions(NS)).sessions]
    assert active[:2] == [second.session_id, session.session_id]
    for stop in range(2):  # the second stop finds it stopped
        stopped = await compute.stop_session(NS, session.session_id)
        assert (stopped.session_id, stopped.status) == (session.session_id, "stopped"), stop
    assert session.session_id not in [s.session_id for s in (await compute.list_sessions(NS)).sessions]
    every = {s.session_id: s.status for s in (await compute.list_sessions(NS, include_stopped=True)).sessions}
    assert every[session.session_id] == "stopped" and every[second.session_id] == "running"
    assert (await compute.session_health(NS, session.session_id)).status == "stopped"
    await compute.stop_session(NS, second.session_id)


async def test_fetch_reaches_the_server_in_the_sandbox(
    served: Any, copass_server: Server, alpha: Org
) -> None:
    compute = compute_of(copass_server, alpha.key)
    before = await compute.get_session(NS, served.session_id)
    got = await served.fetch(PORT, "/echo?x=1&y=two")
    assert got.status_code == 200
    echoed = got.json()
    assert (echoed["method"], echoed["path"], echoed["query"]) == ("GET", "/echo", "x=1&y=two")
    assert echoed["authorization"] == []  # the gateway keeps the API key from the sandbox
    assert "access-control-allow-origin" not in got.headers  # the upstream's CORS is dropped

    posted = await served.fetch(PORT, "/echo", method="POST", content=b'{"a": 1}')
    assert posted.status_code == 200 and posted.json()["body"] == '{"a": 1}'

    events = await served.fetch(PORT, "/sse")
    assert events.headers["content-type"].startswith("text/event-stream")
    assert [line for line in events.text.splitlines() if line.startswith("data:")] == [
        "data: 0",
        "data: 1",
        "data: 2",
    ]

    root = await served.fetch(PORT, "")  # the bare per-port URL
    assert root.status_code == 200 and "hello from the sandbox" in root.text
    after = await compute.get_session(NS, served.session_id)
    assert after.last_activity_at > before.last_activity_at  # gateway traffic is activity


async def test_a_streamed_answer_arrives_chunk_by_chunk(served: Any, alpha: Org) -> None:
    """Each chunk is sent by the server only once the client has read the one before,
    so the answer can only complete if the gateway passes chunks on as they come."""
    auth = {"Authorization": f"Bearer {alpha.key}"}
    async with (
        httpx.AsyncClient(timeout=60) as http,
        http.stream("GET", served.proxy_url(PORT, "/stream"), headers=auth) as answer,
    ):
        assert answer.status_code == 200
        lines = answer.aiter_lines()
        for n in range(5):
            assert await anext(lines) == f"chunk-{n}"
            go = await http.get(served.proxy_url(PORT, f"/go?n={n}"), headers=auth)
            assert go.status_code == 200


async def test_proxy_url_opens_with_httpx_and_in_chromium(served: Any, alpha: Org, tmp_path: Path) -> None:
    url = served.proxy_url(PORT, "/")
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(url, headers={"Authorization": f"Bearer {alpha.key}"})
    assert page.status_code == 200 and "hello from the sandbox" in page.text
    if CHROMIUM is None:
        pytest.skip(
            "chromium is missing (scripts/install-deps.sh installs it): proxy_url tested with httpx only"
        )
    async with chromium(tmp_path / "profile") as tab:
        await tab.call("Network.enable")
        await tab.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Bearer {alpha.key}"})
        await tab.open(url)
        await tab.settled("document.getElementById('hello') !== null")
        assert await tab.evaluate("document.getElementById('hello').textContent") == "hello from the sandbox"


async def test_websocket_url_with_authorization_on_the_upgrade(served: Any, alpha: Org) -> None:
    url = served.websocket_url(PORT, "/ws")
    assert url.startswith("ws://")
    async with connect(url, additional_headers={"Authorization": f"Bearer {alpha.key}"}) as ws:
        assert await ws.recv() == "auth:no"  # the upgrade reached the sandbox without the key
        await ws.send("hello")
        assert await ws.recv() == "HELLO"
    with pytest.raises(Exception, match="401"):
        async with connect(url):
            pass


async def test_the_gateways_refusals(served: Any, copass_server: Server, alpha: Org, beta: Org) -> None:
    url = served.proxy_url(PORT, "/echo")
    async with httpx.AsyncClient(timeout=30) as http:
        missing = await http.get(url)
        assert missing.status_code == 401
        malformed = await http.get(url, headers={"Authorization": "Token abc"})
        assert malformed.status_code == 401
        bad_key = await http.get(url, headers={"Authorization": "Bearer ek_nothere_" + "x" * 32})
        assert bad_key.status_code == 401
        not_owned = await http.get(url, headers={"Authorization": f"Bearer {beta.key}"})
        unknown = await http.get(
            served.proxy_url(PORT, "/echo").replace(served.session_id, "sb-0123456789abcdef"),
            headers={"Authorization": f"Bearer {alpha.key}"},
        )
        assert not_owned.status_code == unknown.status_code == 404
        assert not_owned.content == unknown.content  # one answer for both
    nothing_listens = await served.fetch(PORT + 1, "/")
    assert nothing_listens.status_code == 502
    twice = await served.fetch(PORT, "/echo", headers={"authorization": f"Bearer {beta.key}"})
    assert twice.status_code == 400  # two Authorization headers: refused, not decided by the first


async def test_another_orgs_key_sees_no_session(served: Any, copass_server: Server, beta: Org) -> None:
    theirs = compute_of(copass_server, beta.key)
    for call in (
        theirs.get_session(NS, served.session_id),
        theirs.session_health(NS, served.session_id),
        theirs.exec(NS, served.session_id, cmd=["true"]),
        theirs.stop_session(NS, served.session_id),
    ):
        with pytest.raises(CopassApiError) as refused:
            await call
        assert refused.value.status == 404
    assert (await theirs.list_sessions(NS, include_stopped=True)).sessions == []


async def test_the_per_user_cap_answers_409(copass_server: Server, alpha: Org) -> None:
    compute = compute_of(copass_server, alpha.key_of("developer", "capped"))
    made = [await compute.create_session("cap-a" if n % 2 else "cap-b", template="base") for n in range(CAP)]
    with pytest.raises(CopassApiError) as refused:
        await compute.create_session("cap-c", template="base")
    assert refused.value.status == 409 and refused.value.body["field"] == "compute_sessions_per_user"
    await compute.stop_session("cap-b", made[0].session_id)
    made[0] = await compute.create_session("cap-c", template="base")  # room again
    for session, namespace in zip(made, ["cap-c", "cap-a", "cap-b", "cap-a"], strict=True):
        await compute.stop_session(namespace, session.session_id)


async def test_the_deadline_stops_and_removes_a_session(copass_server: Server, alpha: Org) -> None:
    compute = compute_of(copass_server, alpha.key)
    session = await compute.create_session(NS, template="base", timeout_seconds=2)
    assert (await session.fetch(PORT, "/")).status_code == 502  # running, nothing listens

    async def stopped() -> bool:
        return bool((await compute.get_session(NS, session.session_id)).status == "stopped")

    await eventually_async(stopped, 30, "the session outlived its deadline")
    assert (await session.fetch(PORT, "/")).status_code == 404
    with pytest.raises(CopassApiError) as refused:
        await compute.exec(NS, session.session_id, cmd=["true"])
    assert refused.value.status == 409
    runc = copass_server.env["CORRAL_RUNC_ROOT"]
    command = ["runc", "--root", runc, "list", "-f", "json"]
    listed = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, check=True)
    assert session.session_id not in {c["id"] for c in json.loads(listed.stdout or "null") or []}


async def test_the_kill_switch(served: Any, copass_server: Server, alpha: Org) -> None:
    compute = compute_of(copass_server, alpha.key)
    copass_server.cli("killswitch", "on", "--org", "alpha")
    try:

        async def switched_off() -> bool:
            return bool((await served.fetch(PORT, "/echo")).status_code == 503)

        await eventually_async(switched_off, 30, "the gateway never answered 503")
        with pytest.raises(CopassApiError) as refused:
            await compute.create_session(NS, template="base")
        assert refused.value.status == 403
    finally:
        copass_server.cli("killswitch", "off", "--org", "alpha")

    async def back() -> bool:
        return bool((await served.fetch(PORT, "/echo")).status_code == 200)

    await eventually_async(back, 30, "the gateway stayed off")
