"""The resolver's bounds per sandbox, per org and for the node (corral.network.quota),
and how the gate learns a sandbox's org."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.domain import EgressPolicy
from corral.network import quota
from corral.network.gate import Attached, Gate
from corral.network.policy import Rules
from corral.network.quota import Quota, QuotaLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    q = Quota(QuotaLimits(rate=2, burst=3, outstanding=100), clock=clock)
    tickets = [q.enter("a") for _ in range(4)]
    assert [t is not None for t in tickets] == [True, True, True, False]
    assert q.enter("b") is not None, "buckets are per client"
    clock.now += 0.5
    assert q.enter("a") is not None and q.enter("a") is None, "one token in half a second"
    clock.now += 100
    assert sum(q.enter("a") is not None for _ in range(10)) == 3, "never more than the burst"


def test_outstanding_queries_per_client_are_given_back() -> None:
    q = Quota(QuotaLimits(outstanding=2, rate=1000, burst=1000))
    first, second = q.enter("a"), q.enter("a")
    assert first is not None and second is not None
    assert q.enter("a") is None and q.outstanding("a") == 2
    first.close()
    first.close()  # idempotent
    assert q.outstanding("a") == 1
    third = q.enter("a")
    assert third is not None
    with third:
        assert q.outstanding("a") == 2
    assert q.outstanding("a") == 1


def test_an_org_has_its_cap_at_the_upstream() -> None:
    q = Quota(QuotaLimits(outstanding=2, rate=1000, burst=1000, org_outstanding=3, total=100, reserve=0))
    held = []
    for client in ("a1", "a1", "a2", "a2"):
        ticket = q.enter(client)
        assert ticket is not None
        held.append(ticket.upstream("org:alpha"))
    assert held == [True, True, True, False] and q.at_upstream("org:alpha") == 3
    ticket = q.enter("b1")
    assert ticket is not None and ticket.upstream("org:beta")
    assert ticket.upstream("org:beta") and q.at_upstream("org:beta") == 1, "taken once"
    ticket.close()
    assert q.at_upstream("org:beta") == 0 and q.upstream_total == 3


def test_the_reserve_is_only_for_orgs_within_one_sandboxs_worth() -> None:
    q = Quota(QuotaLimits(outstanding=2, rate=1000, burst=1000, org_outstanding=100, total=6, reserve=2))
    alpha = [q.ticket().upstream("org:alpha") for _ in range(5)]
    assert alpha == [True] * 4 + [False], "the shared part: total - reserve"
    assert [q.ticket().upstream("org:beta") for _ in range(2)] == [True, True], "the reserve"
    assert not q.ticket().upstream("org:gamma"), "the pool is full"
    assert q.upstream_total == 6


def test_idle_buckets_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quota, "MAX_BUCKETS", 10)
    clock = Clock()
    q = Quota(QuotaLimits(rate=1, burst=2), clock=clock)
    for i in range(10):
        ticket = q.enter(f"c{i}")
        assert ticket is not None
        ticket.close()
    clock.now += 5
    assert q.enter("new") is not None
    assert len(q._buckets) == 1


def test_limits_are_checked() -> None:
    for bad in ({"outstanding": 0}, {"rate": 0}, {"reserve": 512}, {"reserve": -1}):
        with pytest.raises(ValueError):
            QuotaLimits(**bad)


async def test_the_gate_learns_an_org_once_per_sandbox() -> None:
    asked: list[str] = []
    orgs: dict[str, str | None] = {"sb-a": None}

    async def org_of(sandbox_id: str) -> str | None:
        asked.append(sandbox_id)
        await asyncio.sleep(0)  # a turn of the loop: the other lookups start meanwhile
        return orgs[sandbox_id]

    firewall: Any = None
    gate = Gate(firewall, lambda *_: None, org_of=org_of)
    policy = EgressPolicy()
    gate.add(Attached("sb-a", "10.0.0.2", "v", "n", policy, Rules.compile(policy)))
    assert await gate.org("10.0.0.9") is None, "not a sandbox"
    assert await asyncio.gather(*(gate.org("10.0.0.2") for _ in range(5))) == [None] * 5
    assert asked == ["sb-a"], "one lookup at a time"
    orgs["sb-a"] = "org-1"  # claimed (a standby sandbox gets its org at create)
    assert await gate.org("10.0.0.2") is None, "asked again only after a while"
    gate.sandboxes["sb-a"].org_asked -= 60
    assert await gate.org("10.0.0.2") == "org-1"
    assert await gate.org("10.0.0.2") == "org-1" and asked == ["sb-a", "sb-a"], "kept"
