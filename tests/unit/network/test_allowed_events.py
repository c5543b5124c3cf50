"""Allowed connections (a policy's ``audit_allowed``) from the kernel's log to
``on_allowed``: their own buckets per sandbox, the flag kept wherever a policy is kept
(no root; the real firewall and NFLOG: tests/integration/network/test_allowed.py)."""

from __future__ import annotations

from pathlib import Path

from corral.domain import EgressMode, EgressPolicy
from corral.domain.config_json import egress_from, egress_json
from corral.domain.egress import validate_policy
from corral.network import nflog
from corral.network.denials import Denials
from corral.network.ledger import Ledger, Record
from corral.network.null import NullNetwork
from corral.network.policy import Rules
from tests.support.clock import FakeClock

AUDITED = EgressPolicy(EgressMode.DENY_ALL, allow=("10.1.0.0/16",), audit_allowed=True)

Got = list[tuple[str, dict[str, object]]]


async def test_allowed_and_denied_go_to_their_callbacks_with_their_own_bounds() -> None:
    allowed: Got = []
    denied: Got = []

    async def on_allowed(sid: str, event: dict[str, object]) -> None:
        allowed.append((sid, event))

    async def on_denied(sid: str, event: dict[str, object]) -> None:
        denied.append((sid, event))

    clock = FakeClock()
    denials = Denials(
        on_denied,
        {"10.0.0.2": "sb-a"}.get,
        lambda s, ip: None,
        burst=2,
        clock=clock.monotonic,
        on_allowed=on_allowed,
    )
    await denials.start(group=None)
    for _ in range(5):
        denials._kernel(nflog.Logged("allowed", "10.0.0.2", "10.1.2.3", "tcp", 443))
    denials._kernel(nflog.Logged("policy", "10.0.0.2", "1.2.3.4", "udp", 53))
    await denials.delivered()
    assert allowed == 2 * [("sb-a", {"dst": "10.1.2.3", "port": 443, "proto": "tcp", "host": None})]
    assert [event["dst"] for _, event in denied] == ["1.2.3.4"]  # a full allowed bucket spares it
    clock.advance(1.0)
    denials._kernel(nflog.Logged("allowed", "10.0.0.2", "10.1.2.4", "tcp", 443))
    await denials.delivered()
    assert allowed[-1][1]["suppressed"] == 3
    await denials.close()


async def test_the_flag_is_kept_by_validation_rules_store_json_and_ledger(tmp_path: Path) -> None:
    assert validate_policy(AUDITED) == AUDITED
    assert Rules.compile(AUDITED).audit_allowed and not Rules.compile(EgressPolicy()).audit_allowed
    assert egress_from(egress_json(AUDITED)) == AUDITED
    assert "auditAllowed" not in egress_json(EgressPolicy())
    ledger = Ledger(tmp_path)
    ledger.records["sb-aaaaaaaaaaaaaaaa"] = Record("10.9.0.3", AUDITED)
    await ledger.save()
    again = Ledger(tmp_path)
    await again.load()
    assert again.records["sb-aaaaaaaaaaaaaaaa"].policy == AUDITED


async def test_the_null_network_delivers_allowed_connections_of_audited_policies_only() -> None:
    allowed: Got = []

    async def on_allowed(sid: str, event: dict[str, object]) -> None:
        allowed.append((sid, event))

    network = NullNetwork()
    network.on_allowed = on_allowed
    await network.attach("sb-aaaaaaaaaaaaaaaa", AUDITED)
    await network.attach("sb-bbbbbbbbbbbbbbbb", EgressPolicy())
    await network.allow("sb-aaaaaaaaaaaaaaaa", {"dst": "10.1.2.3"})
    await network.allow("sb-bbbbbbbbbbbbbbbb", {"dst": "10.1.2.3"})
    assert allowed == [("sb-aaaaaaaaaaaaaaaa", {"dst": "10.1.2.3"})]
