"""The network ledger's file format and the pool's names (no root)."""

from __future__ import annotations

import json
from pathlib import Path

from corral.domain import EgressMode, EgressPolicy
from corral.network import spares
from corral.network.ledger import Ledger, Record
from corral.network.recovery import with_names

DENY = EgressPolicy(mode=EgressMode.DENY_ALL, allow=("10.1.0.0/16",))


async def test_names_and_spares_survive_a_save(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.records["sb-aaaaaaaaaaaaaaaa"] = Record("10.9.0.3", DENY, "c-pool-0123456789ab", "vp0123456789ab")
    ledger.spares["abcdefabcdef"] = "10.9.0.4"
    ledger.cursor = "10.9.0.4"
    await ledger.save()
    again = Ledger(tmp_path)
    await again.load()
    assert again.records == ledger.records
    assert again.spares == {"abcdefabcdef": "10.9.0.4"} and again.cursor == "10.9.0.4"


async def test_a_version_1_ledger_gets_the_default_names(tmp_path: Path) -> None:
    (tmp_path / "network.json").write_text(
        json.dumps(
            {
                "version": 1,
                "cursor": "10.9.0.2",
                "sandboxes": {
                    "sb-bbbbbbbbbbbbbbbb": {"address": "10.9.0.2", "policy": {"mode": "allow_all"}}
                },
            }
        )
    )
    ledger = Ledger(tmp_path)
    await ledger.load()
    record = ledger.records["sb-bbbbbbbbbbbbbbbb"]
    assert (record.netns, record.veth, ledger.spares) == (None, None, {})
    named = with_names(ledger.records, "c-")["sb-bbbbbbbbbbbbbbbb"]
    assert named.netns == "c-sb-bbbbbbbbbbbbbbbb" and named.veth is not None and named.veth.startswith("vc")


async def test_an_unknown_version_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "network.json").write_text(json.dumps({"version": 99, "sandboxes": {}}))
    ledger = Ledger(tmp_path)
    await ledger.load()
    assert ledger.records == {} and (tmp_path / "network.json.bad").exists()


def test_pool_names() -> None:
    netns, veth = spares.names("corral0-", "0123456789ab")
    assert (netns, veth) == ("corral0-pool-0123456789ab", "vp0123456789ab") and len(veth) <= 15
    assert spares.tag_of_netns("corral0-", netns) == "0123456789ab"
    assert spares.tag_of_veth(veth) == "0123456789ab"
    for other in ("corral0-sb-0123456789ab", "corral0-pool-xyz", "corral1-pool-0123456789ab"):
        assert spares.tag_of_netns("corral0-", other) is None
    assert spares.tag_of_veth("vc0123456789ab") is None and spares.tag_of_veth("vp0123") is None
