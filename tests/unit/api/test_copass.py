"""The Copass compute surface (corral/api/copass) driven by the real copass-core client
against corral served by uvicorn (process runtime: the real agent, no isolation). The
gateway and the runc runtime are tested in tests/copass."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
from copass_core import ApiKeyAuth, CopassClient
from copass_core.http.errors import CopassApiError
from fastapi import FastAPI

from corral.core import Core
from tests.support.app import KEY, make_app, make_settings, remove_sandboxes, served
from tests.support.sockets import listening, port_of

NS = "storage-ns-1"
BASE = f"/api/v1/storage/sandboxes/{NS}/compute"


@dataclass
class Served:
    url: str
    app: FastAPI

    @property
    def core(self) -> Core:
        core: Core = self.app.state.core
        return core


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    sock = listening()
    settings = make_settings(
        tmp_path_factory.mktemp("copass"),
        port=port_of(sock),
        compute_sessions_per_user=3,
        kill_switch_refresh_s=3600,
    )
    app = make_app(settings)
    with served(settings, app, sock, "corral-copass") as url:
        yield Served(url, app)
        remove_sandboxes(url, KEY)


@pytest_asyncio.fixture
async def compute(server: Served) -> AsyncIterator[Any]:
    client = CopassClient(auth=ApiKeyAuth(key=KEY), api_url=server.url)
    yield client.compute
    for session in (await client.compute.list_sessions(NS)).sessions:
        await client.compute.stop_session(NS, session.session_id)


def raw(server: Served, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", **kwargs.pop("headers", {})}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kwargs)


async def test_the_whole_flow(server: Served, compute: Any) -> None:
    templates = (await compute.list_templates(NS)).templates
    assert "base" in [t.name for t in templates]
    assert all(t.provider == "corral" and t.cpu_count >= 1 and t.memory_mb > 0 for t in templates)
    assert (await compute.list_templates(NS, provider="e2b")).templates == []

    session = await compute.create_session(
        NS, template="base", env_vars={"GREETING": "hello"}, timeout_seconds=600, metadata={"team": "qa"}
    )
    assert session.status == "running" and session.template == "base"
    assert session.metadata == {"team": "qa"}
    assert session.gateway is not None and session.gateway.kind == "edge-proxy-v1"
    assert session.proxy_url(3000, "/x?y=1") == f"{server.url}/compute/{session.session_id}/p/3000/x?y=1"
    assert session.websocket_url(3000, "/ws").startswith("ws://127.0.0.1:")
    assert session.deadline_at > session.provisioned_at

    fed = await compute.exec(
        NS, session.session_id, cmd=["sh", "-c", "tr a-z A-Z; echo $GREETING >&2"], stdin="abc\n"
    )
    assert (fed.stdout, fed.stderr, fed.exit_code, fed.truncated) == ("ABC\n", "hello\n", 0, False)
    assert fed.elapsed_ms >= 0
    failed = await compute.exec(NS, session.session_id, cmd=["sh", "-c", "exit 7"])
    assert failed.exit_code == 7
    slow = await compute.exec(NS, session.session_id, cmd=["sleep", "30"], timeout_seconds=1)
    assert slow.exit_code == 124 and 900 <= slow.elapsed_ms < 10_000
    flood = await compute.exec(
        NS, session.session_id, cmd=["sh", "-c", "head -c 11000000 /dev/zero | tr '\\0' x"]
    )
    assert flood.truncated and len(flood.stdout) + len(flood.stderr) == 10 * 1024 * 1024

    health = await compute.session_health(NS, session.session_id)
    assert (health.session_id, health.status) == (session.session_id, "ready")
    assert health.last_activity_at >= session.last_activity_at
    got = await compute.get_session(NS, session.session_id)
    assert got.last_activity_at > session.last_activity_at  # exec is activity

    other = await compute.create_session(NS, template="base")
    listed = [s.session_id for s in (await compute.list_sessions(NS)).sessions]
    assert listed == [other.session_id, session.session_id]
    assert [s.session_id for s in (await compute.list_sessions(NS, limit=1)).sessions] == [other.session_id]
    assert (await compute.list_sessions("another-namespace")).sessions == []

    stopped = await compute.stop_session(NS, session.session_id)
    assert (stopped.session_id, stopped.status) == (session.session_id, "stopped")
    again = await compute.stop_session(NS, session.session_id)
    assert again.status == "stopped"
    assert [s.session_id for s in (await compute.list_sessions(NS)).sessions] == [other.session_id]
    everything = {
        s.session_id: s.status for s in (await compute.list_sessions(NS, include_stopped=True)).sessions
    }
    assert everything == {other.session_id: "running", session.session_id: "stopped"}
    assert (await compute.session_health(NS, session.session_id)).status == "stopped"
    with pytest.raises(CopassApiError) as refused:
        await compute.exec(NS, session.session_id, cmd=["true"])
    assert refused.value.status == 409


async def test_unknown_sessions_and_templates_are_404(compute: Any) -> None:
    for call in (
        compute.get_session(NS, "sb-0123456789abcdef"),
        compute.get_session(NS, "not-a-session"),
        compute.session_health(NS, "sb-0123456789abcdef"),
        compute.stop_session(NS, "sb-0123456789abcdef"),
        compute.exec(NS, "sb-0123456789abcdef", cmd=["true"]),
        compute.create_session(NS, template="no-such-template"),
    ):
        with pytest.raises(CopassApiError) as refused:
            await call
        assert refused.value.status == 404 and isinstance(refused.value.body, dict)


async def test_the_per_user_cap_is_409(compute: Any) -> None:
    for _ in range(3):
        await compute.create_session(NS, template="base")
    with pytest.raises(CopassApiError) as refused:
        await compute.create_session("elsewhere", template="base")
    assert refused.value.status == 409
    assert refused.value.body["field"] == "compute_sessions_per_user"


async def test_the_kill_switch_refuses_creates_with_403(server: Served, compute: Any) -> None:
    before = len((await compute.list_sessions(NS, include_stopped=True)).sessions)
    server.core.kill_switch.engage()
    try:
        with pytest.raises(CopassApiError) as refused:
            await compute.create_session(NS, template="base")
    finally:
        server.core.kill_switch.release()
    assert refused.value.status == 403
    assert len((await compute.list_sessions(NS, include_stopped=True)).sessions) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "template"),
        ({"template": 3}, "template"),
        ({"template": "base", "timeout_seconds": 0}, "timeout_seconds"),
        ({"template": "base", "timeout_seconds": 3601}, "timeout_seconds"),
        ({"template": "base", "timeout_seconds": "60"}, "timeout_seconds"),
        ({"template": "base", "env_vars": {"A": 1}}, "env_vars"),
        ({"template": "base", "env_vars": ["A"]}, "env_vars"),
        ({"template": "base", "metadata": {"k": None}}, "metadata"),
        ({"template": "base", "metadata": {"user_id": "x"}}, "metadata"),
        ({"template": "base", "metadata": {"agent_id": "x"}}, "metadata"),
    ],
)
def test_bad_creates_are_400_naming_the_field(server: Served, body: dict[str, Any], field: str) -> None:
    answer = raw(server, "POST", f"{BASE}/sessions", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field


async def test_bad_execs_and_queries_are_400_naming_the_field(server: Served, compute: Any) -> None:
    session = await compute.create_session(NS, template="base")
    exec_path = f"{BASE}/sessions/{session.session_id}/exec"
    for body, field in [
        ({"cmd": []}, "cmd"),
        ({"cmd": "ls"}, "cmd"),
        ({"cmd": ["ls", 1]}, "cmd"),
        ({}, "cmd"),
        ({"cmd": ["true"], "timeout_seconds": 0}, "timeout_seconds"),
        ({"cmd": ["true"], "timeout_seconds": 3601}, "timeout_seconds"),
        ({"cmd": ["true"], "stdin": 5}, "stdin"),
        ({"cmd": ["true"], "stdin": "x" * (128 * 1024 + 1)}, "stdin"),
    ]:
        answer = raw(server, "POST", exec_path, json=body)
        assert (answer.status_code, answer.json()["field"]) == (400, field), (body, answer.text)
    for query, field in [("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit")]:
        answer = raw(server, "GET", f"{BASE}/sessions?{query}")
        assert (answer.status_code, answer.json()["field"]) == (400, field), (query, answer.text)
    not_json = raw(server, "POST", exec_path, content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and isinstance(not_json.json(), dict)


def test_credentials(server: Served) -> None:
    path = f"{BASE}/sessions"
    missing = httpx.get(server.url + path, timeout=30)
    assert missing.status_code == 401 and isinstance(missing.json(), dict)
    wrong = httpx.get(server.url + path, headers={"Authorization": "Bearer ek_nope_" + "x" * 32}, timeout=30)
    assert wrong.status_code == 401
    twice = httpx.get(
        server.url + path,
        headers=[("Authorization", f"Bearer {KEY}"), ("authorization", "Bearer something-else")],
        timeout=30,
    )
    assert twice.status_code == 400 and twice.json()["field"] == "Authorization"
    token = httpx.post(f"{server.url}/api/v1/auth/token", json={"api_key": KEY}, timeout=30).json()["token"]
    as_user = httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert as_user.status_code == 200 and "sessions" in as_user.json()  # a user JWT works as well


def test_neither_surface_shadows_the_other(server: Served) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    xgen = httpx.post(f"{server.url}/api/v1/auth/token", json={"api_key": KEY}, timeout=30)
    assert xgen.status_code == 200 and xgen.json()["token"], xgen.text
    unknown = httpx.get(f"{server.url}{BASE}/nothing-here", headers=headers, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"  # this surface's envelope
