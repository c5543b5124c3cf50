"""The hub (corral.services.hub): every subscriber hears, in order; one that fails is
logged and breaks neither the others nor the publisher."""

from __future__ import annotations

import pytest

from corral.services.hub import Hub


def test_every_subscriber_hears_in_the_order_it_subscribed() -> None:
    hub = Hub()
    heard: list[tuple[str, str]] = []
    hub.sandbox_stopped.subscribe(lambda sid: heard.append(("first", sid)))
    hub.sandbox_stopped.subscribe(lambda sid: heard.append(("second", sid)))
    hub.key_revoked.subscribe(lambda kid: heard.append(("key", kid)))
    hub.sandbox_stopped.publish("sb-1")
    assert heard == [("first", "sb-1"), ("second", "sb-1")]


def test_a_failing_subscriber_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub()
    heard: list[str] = []

    def broken(key_id: str) -> None:
        raise RuntimeError(f"a bug while forgetting {key_id}")

    hub.key_revoked.subscribe(broken)
    hub.key_revoked.subscribe(heard.append)
    with caplog.at_level("ERROR", logger="corral.hub"):
        hub.key_revoked.publish("key-1")  # does not raise
    assert heard == ["key-1"]
    assert "a bug while forgetting key-1" in caplog.text
    assert "key_revoked" in caplog.text
