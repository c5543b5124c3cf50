"""The pool of ready network namespaces (``corral/network/spares.py``) against the real
kernel: claims, refills, what a restart and ``reclaim`` make of pooled entries, and
that a ready namespace is sealed off from everything, claimed sandboxes included."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from corral.domain import EgressMode, EgressPolicy
from corral.network import namespace, spares

from .conftest import Harness, Inside
from .test_node import ALLOW_ALL, DENY_ALL, deny_all, host_connects, nft_objects, output

pytestmark = pytest.mark.integration


def ledger(harness: Harness) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((harness.state_dir / "network.json").read_text())
    return data


def pooled(harness: Harness) -> set[str]:
    """Names of the pool-named namespaces of this world."""
    head = harness.world.prefix + spares.POOL_INFIX
    return {name for name in os.listdir("/run/netns") if name.startswith(head)}


async def test_attach_claims_a_ready_namespace_and_the_pool_refills(harness: Harness) -> None:
    await harness.ready(4)
    before = set(ledger(harness)["spares"])
    box = await harness.box(ALLOW_ALL)
    name = os.path.basename(box.info.netns_path)
    tag = spares.tag_of_netns(harness.world.prefix, name)
    assert tag is not None and tag in before, "a ready namespace was claimed"
    chain = spares.chain(tag)
    assert ledger(harness)["sandboxes"][box.id]["chain"] == chain, "its ready chain took the rules"
    routed = f'{box.info.address} comment "{chain}" : goto allow_all'
    assert routed in nft_objects(harness.world.table, chain), "its address routed to its policy"
    assert harness.host_end(box.id) == spares.names(harness.world.prefix, tag)[1]
    assert namespace.label_of(spares.names(harness.world.prefix, tag)[1]) == box.id
    assert await box.inside.reaches(harness.world.out1)
    answer = await box.inside.resolve("allowed.test", box.info.gateway)
    assert answer["rcode"] == 0 and answer["addresses"] == [harness.world.out1]
    await harness.ready(4)
    state = ledger(harness)
    assert tag not in state["spares"] and len(state["spares"]) == 4
    assert state["sandboxes"][box.id]["netns"] == name
    assert box.info.address not in state["spares"].values()
    assert len({*state["spares"].values(), box.info.address}) == 5, "distinct addresses"
    await box.inside.stop()
    await harness.network.detach(box.id)
    assert not os.path.exists(box.info.netns_path), "a used namespace is removed, never pooled again"
    assert nft_objects(harness.world.table, chain) == ""
    assert name not in pooled(harness) and len(pooled(harness)) == 4


async def test_policy_and_denials_on_a_claimed_namespace(harness: Harness) -> None:
    w = harness.world
    await harness.ready(4)
    box = await harness.box(deny_all("allowed.test"))
    assert spares.tag_of_netns(w.prefix, os.path.basename(box.info.netns_path)) is not None
    assert (await box.inside.resolve("allowed.test", box.info.gateway))["rcode"] == 0
    assert await box.inside.reaches(w.out1)
    assert not await box.inside.reaches(w.out2)
    event = await harness.denial(box.id, dst=w.out2)
    assert event["reason"] == "policy", "the claimed address names this sandbox"
    assert (await box.inside.resolve("other.test", box.info.gateway))["rcode"] == 3
    assert (await harness.denial(box.id, proto="dns"))["host"] == "other.test"
    await harness.network.set_policy(box.id, ALLOW_ALL)
    assert await box.inside.reaches(w.out2)


async def test_without_ready_namespaces_attach_makes_its_own(harness: Harness) -> None:
    await harness.ready(4)
    await harness.network.close()
    harness.network = harness.make(ready_namespaces=0)
    assert await harness.network.reclaim(set()) == []
    assert not pooled(harness), "the ledger's ready namespaces are not taken over, but removed"
    box = await harness.box(ALLOW_ALL)
    assert box.info.netns_path == f"/run/netns/{harness.world.prefix}{box.id}"
    assert harness.host_end(box.id) == namespace.veth_name(box.id)
    assert await box.inside.reaches(harness.world.out1)
    assert harness.network.status()["ready_namespaces"] == 0 and not pooled(harness)


async def test_a_drained_pool_falls_back_and_a_restart_refills(harness: Harness) -> None:
    await harness.ready(4)
    await harness.network.drain()
    assert not pooled(harness) and ledger(harness)["spares"] == {}
    box = await harness.box(DENY_ALL)
    assert box.info.netns_path == f"/run/netns/{harness.world.prefix}{box.id}"
    await harness.network.close()
    harness.network = harness.make()
    await harness.ready(4)
    assert len(pooled(harness)) == 4
    assert await harness.network.info(box.id) == box.info


async def test_ready_namespaces_survive_a_restart_and_reclaim_removes_leaked_ones(harness: Harness) -> None:
    w = harness.world
    await harness.ready(4)
    kept = await harness.box(ALLOW_ALL)
    await harness.ready(4)
    ready = set(ledger(harness)["spares"])
    lost = min(ready)  # its namespace disappears while corral is down
    await harness.network.close()
    await output("ip", "netns", "del", spares.names(w.prefix, lost)[0])
    leaked = "ab" * 6  # a pooled namespace no ledger knows: a crash between making and recording it
    netns, veth = spares.names(w.prefix, leaked)
    await output("ip", "netns", "add", netns)
    await output("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    await output("ip", "link", "set", veth, "master", w.bridge)
    orphan = "cd" * 6  # firewall objects of a ready namespace whose making was cut short
    await harness.network.firewall.prepare([(spares.chain(orphan), spares.names(w.prefix, orphan)[1])])
    harness.network = harness.make()
    await harness.network.start()
    assert harness.network.status()["ready_namespaces"] == 3, "the intact ones are taken over"
    assert set(ledger(harness)["spares"]) == ready - {lost}
    assert await harness.network.reclaim({kept.id}) == []
    assert not Path("/run/netns", netns).exists() and not os.path.exists(f"/sys/class/net/{veth}")
    assert (
        nft_objects(w.table, spares.chain(orphan)) == "" and nft_objects(w.table, spares.chain(leaked)) == ""
    )
    assert not os.path.exists(f"/sys/class/net/{spares.names(w.prefix, lost)[1]}"), "remains of the lost one"
    await harness.ready(4)
    assert ready - {lost} <= {spares.tag_of_netns(w.prefix, n) for n in pooled(harness)}
    assert await kept.inside.reaches(w.out1)
    # reclaim of the sandbox itself removes its pool-named namespace
    assert await harness.network.reclaim(set()) == [kept.id]
    assert not os.path.exists(kept.info.netns_path) and nft_objects(w.table, kept.id) == ""
    assert len(pooled(harness)) == 4, "ready namespaces are not a sandbox's: kept"


async def test_a_claimed_namespace_is_recovered_when_ledger_and_rules_are_lost(harness: Harness) -> None:
    w = harness.world
    await harness.ready(4)
    box = await harness.box(ALLOW_ALL)
    assert spares.tag_of_netns(w.prefix, os.path.basename(box.info.netns_path)) is not None
    await harness.ready(4)
    old = set(ledger(harness)["spares"])
    await harness.network.close()
    (harness.state_dir / "network.json").write_text("{not json")
    await output("nft", "delete", "table", "inet", w.table)
    harness.network = harness.make()
    assert await harness.network.info(box.id) == box.info, "found through its label"
    assert not await box.inside.reaches(w.out1), "adopted with deny_all"
    await harness.network.set_policy(box.id, ALLOW_ALL)
    assert await box.inside.reaches(w.out1)
    assert not old & set(ledger(harness)["spares"]), "unrecorded ready ones are not trusted"
    assert await harness.network.reclaim({box.id}) == []
    assert not old & {spares.tag_of_netns(w.prefix, name) for name in pooled(harness)}
    await harness.ready(4)
    assert await box.inside.reaches(w.out1)


async def test_a_ready_namespace_is_sealed_off_from_a_claimed_one(harness: Harness) -> None:
    w = harness.world
    await harness.ready(4)
    box = await harness.box(EgressPolicy(mode=EgressMode.ALLOW_ALL))
    tag, address = next(iter(ledger(harness)["spares"].items()))
    spare = await Inside.start(namespace.netns_path(spares.names(w.prefix, tag)[0]))
    harness.insides.append(spare)
    assert (await spare.call("listen", port=8080))["ok"]
    assert (await box.inside.call("listen", port=8081))["ok"]
    assert host_connects(box.info.address, 8081), "the claimed one answers the host"
    assert not host_connects(address, 8080), "nothing leaves a ready namespace, not even replies"
    assert not await box.inside.reaches(address, 8080)
    assert not await spare.reaches(box.info.address, 8081)
    assert not await spare.reaches(w.out1)
    assert not (await spare.resolve("allowed.test", box.info.gateway))["ok"]
    await asyncio.sleep(0.2)
    assert all(sid == box.id for sid, _ in harness.events), "a ready namespace reports nothing"
    frames = json.loads(await output("ip", "-s", "-j", "link", "show", spares.names(w.prefix, tag)[1]))
    assert frames[0]["stats64"]["rx"]["packets"] > 0, "it did try"
