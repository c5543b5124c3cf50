"""Allowed connections as audit events: the host's firewall logs the new connections a
sandbox's rules let through (for a policy with ``audit_allowed`` only), bounded per
sandbox. Real namespaces; traffic only to the world's namespaces."""

from __future__ import annotations

import time

from corral.domain import EgressMode, EgressPolicy
from tests.integration.network.conftest import Harness
from tests.support.conditions import eventually_async

Events = list[tuple[str, dict[str, object]]]


def _collect(harness: Harness) -> Events:
    """The allowed connections the harness's network reports (its ``on_allowed``)."""
    return harness.allowed


async def test_an_allowed_connection_is_an_event_with_its_destination(harness: Harness) -> None:
    w = harness.world
    allowed = _collect(harness)
    audited = await harness.box(
        EgressPolicy(EgressMode.DENY_ALL, allow=(f"{w.out1}/32",), audit_allowed=True)
    )
    plain = await harness.box(EgressPolicy(EgressMode.DENY_ALL, allow=(f"{w.out1}/32",)))
    assert await audited.inside.reaches(w.out1, 80)
    assert await plain.inside.reaches(w.out1, 80)
    assert not await audited.inside.reaches(w.out2, 80)  # denied: an egress_denied, not this
    await eventually_async(lambda: allowed, 3, "no egress_allowed event")
    await harness.denial(audited.id, dst=w.out2)
    await harness.network._denials.delivered()  # every event so far handed over
    assert allowed == [(audited.id, {"dst": w.out1, "port": 80, "proto": "tcp", "host": None})]


async def test_allow_all_and_a_changed_policy_are_audited_too(harness: Harness) -> None:
    w = harness.world
    allowed = _collect(harness)
    box = await harness.box(EgressPolicy(EgressMode.ALLOW_ALL, audit_allowed=True))
    assert await box.inside.reaches(w.out2, 80)
    await eventually_async(lambda: any(e["dst"] == w.out2 for _, e in allowed), 3, "allow_all not audited")
    await harness.network.set_policy(box.id, EgressPolicy(EgressMode.ALLOW_ALL))
    assert await box.inside.reaches(w.out1, 80)
    await harness.network._denials.delivered()
    assert not any(e["dst"] == w.out1 for _, e in allowed), "audited after the flag was turned off"


async def test_a_flood_of_allowed_connections_gives_few_events(harness: Harness) -> None:
    w = harness.world
    allowed = _collect(harness)
    box = await harness.box(EgressPolicy(EgressMode.DENY_ALL, allow=(f"{w.out1}/32",), audit_allowed=True))
    started = time.monotonic()
    flood = await box.inside.call("flood", host=w.out1, port=80, count=60)
    assert flood["failed"] < 30, flood  # the server may drop some; each SYN passed the firewall
    # A denied attempt after the flood: the kernel logs to one NFLOG socket in order, so
    # once its event is here, every allowed connection logged before it has been read.
    assert not await box.inside.reaches(w.out2, 80)
    await harness.denial(box.id, dst=w.out2)
    await harness.network._denials.delivered()
    seconds = time.monotonic() - started
    # the burst (10), then 1 a second: far fewer than the 60 new connections
    assert 10 <= len(allowed) <= 11 + seconds, (len(allowed), seconds)
    assert any("suppressed" in event for _, event in allowed[10:]) or len(allowed) == 10
