"""The host's Messages API client (corral/network/anthropic.py) names the beta a
computer-use tool needs, and no beta for other requests: seen at the fake upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from corral.network.anthropic import AnthropicClient
from tests.support.fake_anthropic import FakeMessagesApi

KEY = "sk-ant-betas-" + "b" * 20


@pytest.fixture
def upstream() -> Iterator[FakeMessagesApi]:
    fake = FakeMessagesApi(key=KEY).start()
    yield fake
    fake.stop()


async def test_a_computer_tool_names_its_beta_and_plain_calls_none(upstream: FakeMessagesApi) -> None:
    client = AnthropicClient(upstream.url, KEY)
    try:
        computer = {
            "type": "computer_20250124",
            "name": "computer",
            "display_width_px": 1280,
            "display_height_px": 720,
        }
        status, _ = await client.create({"model": "m", "max_tokens": 5, "tools": [computer], "messages": []})
        assert status == 200
        status, _ = await client.create({"model": "m", "max_tokens": 5, "messages": []})
        assert status == 200
    finally:
        await client.close()
    with_tool, plain = upstream.received
    assert with_tool.headers["anthropic-beta"] == "computer-use-2025-01-24"
    assert "anthropic-beta" not in plain.headers
