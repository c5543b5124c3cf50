"""Webhooks with a real receiver on loopback (tests/support/upstream.py) and the real
client: delivered, retried after a failure, refused for private destinations unless
allowed, and a dead receiver never holds up or changes the caller. Outcomes are read
back from the audit trail."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from corral.core import Core
from corral.domain import Event
from corral.errors import InvalidInput
from corral.network.webhook import WebhookClient
from corral.services.webhooks import WebhookService, check_url
from tests.support.upstream import Upstream

ORG = "org-hooks"


@pytest.fixture
def receiver() -> Iterator[Upstream]:
    server = Upstream().start()
    yield server
    server.stop()


def hooks(core: Core, *, allow_private: bool = True, timeout: float = 5.0) -> WebhookService:
    client = WebhookClient(allow_private=allow_private)
    return WebhookService(
        client, core.audit, allow_private=allow_private, timeout=timeout, attempts=3, backoff=0.01
    )


async def outcomes(core: Core) -> list[Event]:
    await core.audit.flush()
    page = await core.audit.store.page(ORG, kinds=["webhook_delivered", "webhook_failed"], newest=False)
    return list(page.events)


async def test_a_payload_is_posted_as_json_and_recorded(core: Core, receiver: Upstream) -> None:
    service = hooks(core)
    service.deliver(
        f"{receiver.url}/hook?token=t0k3n", {"session": {"id": "se-1"}, "result": None}, org_id=ORG
    )
    await service.settle()
    [seen] = receiver.seen
    assert (seen.method, seen.path, seen.headers["Content-Type"]) == ("POST", "/hook", "application/json")
    assert json.loads(seen.body) == {"session": {"id": "se-1"}, "result": None}
    [event] = await outcomes(core)
    assert event.kind == "webhook_delivered"
    assert event.data == {"url": f"{receiver.url}/hook", "status": 200, "attempts": 1}  # no query: no token


async def test_a_failure_is_retried(core: Core, receiver: Upstream) -> None:
    service = hooks(core)
    service.deliver(f"{receiver.url}/fail-once", {"n": 1}, org_id=ORG, sandbox_id="sb-aaaaaaaaaaaa")
    await service.settle()
    assert len(receiver.seen) == 2
    [event] = await outcomes(core)
    assert (event.kind, event.sandbox_id, event.data["attempts"], event.data["status"]) == (
        "webhook_delivered",
        "sb-aaaaaaaaaaaa",
        2,
        200,
    )


async def test_a_client_error_is_final(core: Core, receiver: Upstream) -> None:
    service = hooks(core)
    service.deliver(f"{receiver.url}/status/404", {}, org_id=ORG)
    await service.settle()
    assert len(receiver.seen) == 1
    [event] = await outcomes(core)
    assert (event.kind, event.data["status"], event.data["attempts"]) == ("webhook_failed", 404, 1)


async def test_a_dead_receiver_never_holds_up_the_caller(core: Core) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        service = hooks(core, timeout=0.3)
        started = time.monotonic()
        service.deliver(f"http://127.0.0.1:{silent.getsockname()[1]}/", {"x": 1}, org_id=ORG)
        service.deliver("http://127.0.0.1:9/", {"x": 2}, org_id=ORG)  # nothing listens
        circular: dict[str, object] = {}
        circular["self"] = circular
        service.deliver("http://127.0.0.1:9/", circular, org_id=ORG)  # not JSON: logged, dropped
        assert time.monotonic() - started < 0.1  # deliver returned at once, three times
        await service.settle()
    events = await outcomes(core)
    assert sorted((e.kind, e.data["attempts"]) for e in events) == [
        ("webhook_failed", 3),
        ("webhook_failed", 3),
    ]
    assert all("error" in e.data for e in events)


async def test_private_destinations_are_refused_unless_allowed(core: Core, receiver: Upstream) -> None:
    service = hooks(core, allow_private=False)
    port = receiver.url.rsplit(":", 1)[1]
    with pytest.raises(InvalidInput) as literal:
        service.check_url(receiver.url)
    assert literal.value.field == "webhookUrl"
    named = f"http://localhost:{port}/hook"
    assert service.check_url(named) == named  # a name is checked when resolved
    service.deliver(named, {}, org_id=ORG)
    await service.settle()
    assert receiver.seen == []
    [event] = await outcomes(core)
    assert event.kind == "webhook_failed" and "no public address" in str(event.data["error"])


@pytest.mark.parametrize(
    "url",
    ["", "ftp://example.com/", "http://", "example.com/hook", "http://user:pw@example.com/", "http://a b/",
     "http://example.com:99999/", "http://" + "a" * 2100 + ".com/", 42],
)  # fmt: skip
def test_bad_urls_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        check_url(url)
    assert bad.value.field == "webhookUrl"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://169.254.169.254/", "http://[::1]/", "http://10.1.2.3/"]
)
def test_private_literals_pass_only_when_allowed(url: str) -> None:
    with pytest.raises(InvalidInput):
        check_url(url)
    assert check_url(url, allow_private=True) == url
