"""Agent sessions' refusals through the real app (process runtime, in-process over
ASGI): bad input is a 400 naming the field, a sandbox of another template a 400 saying
which template, a node without a model key a 503 saying what to set, a sandbox that is
not running a 409 naming it; nothing is started for any of them. The sessions
themselves run in tests/agents (runc, the agent template, both SDKs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from corral.api.app import create_app
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from tests.support.app import KEY, kill_all, make_settings

MODEL_KEY = "sk-ant-unit-0123456789"
NO_MODEL = "http://127.0.0.1:9"  # loopback, nothing listening: no call leaves the machine
pytestmark = pytest.mark.asyncio(loop_scope="module")


async def client_for(tmp_path: Path, **settings: object) -> AsyncIterator[httpx.AsyncClient]:
    config = make_settings(tmp_path, max_promised_disk_mb=10**7, **settings)
    app = create_app(
        config,
        runtime=ProcessRuntime(tmp_path / "process-sandboxes"),
        templates=StaticTemplates(("base", "agent")),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://corral.test", headers={"X-API-Key": KEY}
        ) as client:
            yield client
        await kill_all(app.state.core)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keyed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    async for client in client_for(
        tmp_path_factory.mktemp("agents"), anthropic_api_key=MODEL_KEY, anthropic_base_url=NO_MODEL
    ):
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def agent_sandbox(keyed: httpx.AsyncClient) -> str:
    return await sandbox(keyed)


async def sandbox(client: httpx.AsyncClient, template: str = "agent") -> str:
    created = await client.post("/api/sandboxes", json={"templateID": template})
    assert created.status_code == 201, created.text
    return str(created.json()["sandboxID"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   \n"}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"model": "gpt-4o"}, "model"),
        ({"model": "claude sonnet"}, "model"),
        ({"permissionMode": "yolo"}, "permissionMode"),
        ({"maxTurns": 0}, "maxTurns"),
        ({"maxTurns": 1001}, "maxTurns"),
        ({"maxTurns": "3"}, "maxTurns"),
        ({"cwd": "relative/dir"}, "cwd"),
        ({"allowedTools": [""]}, "allowedTools"),
        ({"allowedTools": "Bash"}, "allowedTools"),
        ({"mcpServers": {"fs": 1}}, "mcpServers"),
        ({"mcpServers": {"bad name": {"command": "x"}}}, "mcpServers"),
        ({"resume": "not-a-session"}, "resume"),
        ({"systemPrompt": ["x"]}, "systemPrompt"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    keyed: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    sid = await sandbox(keyed)
    answer = await keyed.post(f"/api/sandboxes/{sid}/agent", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(field), answer.json()
    assert (await keyed.get(f"/api/sandboxes/{sid}/agent")).json() == []


async def test_a_sandbox_of_another_template_is_a_clear_400(keyed: httpx.AsyncClient) -> None:
    sid = await sandbox(keyed, "base")
    answer = await keyed.post(f"/api/sandboxes/{sid}/agent", json={"prompt": "hi"})
    assert answer.status_code == 400
    message = answer.json()["error"]
    assert message.startswith("sandboxID") and "'agent' template" in message and "'base'" in message


async def test_a_sandbox_not_running_is_a_409_naming_it(keyed: httpx.AsyncClient) -> None:
    sid = await sandbox(keyed)
    assert (await keyed.delete(f"/api/sandboxes/{sid}")).status_code == 204
    answer = await keyed.post(f"/api/sandboxes/{sid}/agent", json={"prompt": "hi"})
    assert answer.status_code == 409 and answer.json()["error"].startswith("sandboxID"), answer.text


async def test_without_a_model_key_a_create_says_what_to_set(tmp_path: Path) -> None:
    async for client in client_for(tmp_path):
        sid = await sandbox(client)
        answer = await client.post(f"/api/sandboxes/{sid}/agent", json={"prompt": "hi"})
        assert answer.status_code == 503
        assert "CORRAL_ANTHROPIC_API_KEY" in answer.json()["error"]
        assert (await client.get(f"/api/sandboxes/{sid}/agent")).json() == []


async def test_follow_ups_refuse_an_empty_prompt_and_unknown_sessions(
    keyed: httpx.AsyncClient, agent_sandbox: str
) -> None:
    sid = agent_sandbox
    unknown = "as-0000000000000000"
    empty = await keyed.post(f"/api/sandboxes/{sid}/agent/{unknown}/prompt", json={"text": ""})
    assert empty.status_code == 400 and empty.json()["error"].startswith("text")
    missing = await keyed.post(f"/api/sandboxes/{sid}/agent/{unknown}/prompt", json={"text": "more"})
    assert missing.status_code == 404
    malformed = await keyed.post(f"/api/sandboxes/{sid}/agent/es-0000000000000000/interrupt")
    assert malformed.status_code == 404


async def test_a_session_starts_with_the_binding_not_the_key(keyed: httpx.AsyncClient) -> None:
    sid = await sandbox(keyed)
    created = await keyed.post(f"/api/sandboxes/{sid}/agent", json={"prompt": "hi", "maxTurns": 3})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["sessionID"].startswith("as-") and session["sandboxID"] == sid
    assert len(session["claudeSessionID"]) == 36 and MODEL_KEY not in created.text
    listed = (await keyed.get(f"/api/sandboxes/{sid}/agent")).json()
    assert [s["sessionID"] for s in listed] == [session["sessionID"]]
    assert listed[0]["claudeSessionID"] == session["claudeSessionID"]
    # an agent session is not an exec session, and nothing lists the key
    assert (await keyed.get(f"/api/sandboxes/{sid}/exec")).json() == []
    audit = await keyed.get(f"/api/sandboxes/{sid}/audit")
    assert "agent_session_started" in audit.text and MODEL_KEY not in audit.text
