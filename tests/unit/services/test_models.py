"""Model access from corral's host (services/models.py) against the fake Messages API
on loopback (tests/support/fake_anthropic.py) with the real client: the answer comes
back, the key arrives at the upstream and nowhere else (errors, /metrics, the audit
trail), calls are metered per org, and a node without a key says what to set."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from corral.core import Core
from corral.domain.model_usage import UsageReader
from corral.errors import InvalidInput, LimitExceeded, ModelUnavailable, Unavailable
from tests.support.fake_anthropic import FakeMessagesApi, Text, ToolUse, Turn
from tests.unit.services.conftest import close_core, open_core

KEY = "sk-ant-test-0123456789abcdef-never-leaks"
ORG = "org-models"
BODY: dict[str, object] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "hi"}],
}


@pytest.fixture
def fake() -> Iterator[FakeMessagesApi]:
    server = FakeMessagesApi(key=KEY).start()
    yield server
    server.stop()


@pytest.fixture
async def keyed(tmp_path: Path, fake: FakeMessagesApi) -> AsyncIterator[Core]:
    core = await open_core(tmp_path, anthropic_api_key=KEY, anthropic_base_url=fake.url)
    yield core
    await close_core(core)


async def audit_text(core: Core) -> str:
    await core.audit.flush()
    page = await core.audit.store.page(ORG, newest=False)
    return repr([(e.kind, e.sandbox_id, e.data) for e in page.events])


async def test_an_answer_comes_back_with_the_key_sent_upstream_only(
    keyed: Core, fake: FakeMessagesApi
) -> None:
    fake.add(Turn([Text("hello there")]))
    answer = await keyed.models.messages(ORG, dict(BODY), sandbox_id="sb-x")
    assert answer["content"] == [{"type": "text", "text": "hello there"}]
    assert answer["stop_reason"] == "end_turn"
    [seen] = fake.received
    assert (seen.headers["x-api-key"], seen.headers["anthropic-version"]) == (KEY, "2023-06-01")
    assert seen.body == BODY
    events = await audit_text(keyed)
    assert "model_called" in events and "sb-x" in events and KEY not in events
    metrics = keyed.metrics.render().decode()
    assert f'corral_model_requests_total{{org="{ORG}",status="200",via="host"}} 1.0' in metrics
    assert f'corral_model_output_tokens_total{{org="{ORG}",via="host"}} 7.0' in metrics
    assert KEY not in metrics


async def test_tool_use_turns_say_so(keyed: Core, fake: FakeMessagesApi) -> None:
    fake.add(Turn([Text("writing"), ToolUse("Write", {"file_path": "/tmp/a", "content": "x"})]))
    answer = await keyed.models.messages(ORG, dict(BODY))
    assert answer["stop_reason"] == "tool_use"
    content = answer["content"]
    assert isinstance(content, list) and content[1]["input"] == {"file_path": "/tmp/a", "content": "x"}


async def test_without_a_key_every_call_says_what_to_set(tmp_path: Path) -> None:
    core = await open_core(tmp_path)
    try:
        assert not core.models.configured
        with pytest.raises(ModelUnavailable, match="CORRAL_ANTHROPIC_API_KEY"):
            await core.models.messages(ORG, dict(BODY))
        with pytest.raises(ModelUnavailable):
            core.models.require()
    finally:
        await close_core(core)


async def test_a_refused_key_is_unavailable_and_never_quoted(tmp_path: Path, fake: FakeMessagesApi) -> None:
    core = await open_core(tmp_path, anthropic_api_key="sk-wrong-key", anthropic_base_url=fake.url)
    try:
        with pytest.raises(Unavailable, match="check CORRAL_ANTHROPIC_API_KEY") as caught:
            await core.models.messages(ORG, dict(BODY))
        assert "sk-wrong-key" not in str(caught.value)
        assert 'status="401"' in core.metrics.render().decode()
    finally:
        await close_core(core)


async def test_streaming_is_refused_on_the_host(keyed: Core) -> None:
    with pytest.raises(InvalidInput) as caught:
        await keyed.models.messages(ORG, dict(BODY, stream=True))
    assert caught.value.field == "stream"


async def test_no_upstream_is_unavailable(tmp_path: Path) -> None:
    core = await open_core(tmp_path, anthropic_api_key=KEY, anthropic_base_url="http://127.0.0.1:9")
    try:
        with pytest.raises(Unavailable, match="could not be reached") as caught:
            await core.models.messages(ORG, dict(BODY))
        assert KEY not in str(caught.value)
        assert 'status="0"' in core.metrics.render().decode()
    finally:
        await close_core(core)


def test_error_statuses_map_to_the_error_tree(keyed: Core) -> None:
    envelope = {"type": "error", "error": {"type": "x", "message": f"bad {KEY}"}}
    assert isinstance(keyed.models._error(429, envelope), LimitExceeded)
    refused = keyed.models._error(400, envelope)
    assert isinstance(refused, InvalidInput) and refused.field == "body" and KEY not in str(refused)
    assert isinstance(keyed.models._error(529, envelope), Unavailable)


async def test_a_streamed_answer_is_metered_from_its_events(fake: FakeMessagesApi) -> None:
    fake.add(Turn([Text("a"), ToolUse("Bash", {"command": "true"})]))
    reader = None
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST", f"{fake.url}/v1/messages", json=dict(BODY, stream=True), headers={"x-api-key": KEY}
        ) as answer,
    ):
        reader = UsageReader(answer.headers["content-type"], answer.headers.get("content-encoding", ""))
        async for chunk in answer.aiter_raw(7):  # small chunks: lines cut anywhere
            reader.feed(chunk)
    usage = reader.usage()
    assert (usage.model, usage.output_tokens) == ("claude-sonnet-4-5", 14)
    assert usage.input_tokens > 0


async def test_a_sandbox_s_call_is_its_activity(keyed: Core) -> None:
    from corral.domain.model_usage import ModelUsage
    from corral.services.models import HOST, SANDBOX

    touched: list[str] = []
    keyed.models.on_sandbox_call = touched.append
    await keyed.models.metered(ORG, "sb-one", SANDBOX, 200, ModelUsage("m", 3, 4), 5)
    await keyed.models.metered(ORG, "sb-two", HOST, 200, ModelUsage("m", 3, 4), 5)
    assert touched == ["sb-one"]
    assert (
        'corral_model_input_tokens_total{org="org-models",via="sandbox"} 3.0'
        in keyed.metrics.render().decode()
    )
