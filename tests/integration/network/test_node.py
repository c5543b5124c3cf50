"""NodeNetwork against the real kernel: fake sandboxes are plain network namespaces
attached through it, with a program inside each (see conftest.py for the world)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from corral.domain import EgressMode, EgressPolicy
from corral.errors import Conflict, InvalidInput, NotFound, RuntimeFailure
from corral.network import namespace, nftlib
from tests.support.conditions import eventually_async

from .conftest import Harness

pytestmark = pytest.mark.integration

ALLOW_ALL = EgressPolicy(mode=EgressMode.ALLOW_ALL)
DENY_ALL = EgressPolicy(mode=EgressMode.DENY_ALL)


def deny_all(*allow: str, deny: tuple[str, ...] = ()) -> EgressPolicy:
    return EgressPolicy(mode=EgressMode.DENY_ALL, allow=allow, deny=deny)


def nft_objects(table: str, sid: str) -> str:
    argv = ["nft", "list", "table", "inet", table]
    out = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    return "\n".join(line for line in out.stdout.splitlines() if sid in line)


async def output(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 10)
    return out.decode()


def host_connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return sock.recv(100).startswith(b"HTTP/1.0 200")
    except OSError:
        return False


async def test_attach_gives_a_working_network_and_allow_all_reaches_outside(harness: Harness) -> None:
    box = await harness.box(ALLOW_ALL)
    assert box.info.gateway == harness.network.gateway
    assert box.info.netns_path.startswith(f"/run/netns/{harness.world.prefix}")
    assert os.path.exists(box.info.netns_path)
    assert await harness.network.info(box.id) == box.info
    assert harness.host_end(box.id) is not None
    assert await box.inside.reaches(harness.world.out1)
    assert (await box.inside.call("connect", host=harness.world.out2, port=80))["body"] == "out2"
    answer = await box.inside.resolve("allowed.test", box.info.gateway)
    assert answer["rcode"] == 0 and answer["addresses"] == [harness.world.out1]
    answer = await box.inside.resolve("other.test", box.info.gateway, tcp=True)
    assert answer["rcode"] == 0 and answer["addresses"] == [harness.world.out2]
    assert (await box.inside.resolve("missing.test", box.info.gateway))["rcode"] == 3
    netns = os.path.basename(box.info.netns_path)
    assert await output("ip", "-n", netns, "-6", "addr", "show", "dev", "eth0") == "", "no IPv6 on eth0"
    assert "::1" in await output("ip", "-n", netns, "-6", "addr", "show", "dev", "lo")


async def test_deny_all_blocks_and_reports_the_destination(harness: Harness) -> None:
    box = await harness.box(DENY_ALL)
    assert not await box.inside.reaches(harness.world.out1)
    event = await harness.denial(box.id, dst=harness.world.out1)
    assert event == {"dst": harness.world.out1, "port": 80, "proto": "tcp", "host": None, "reason": "policy"}
    answer = await box.inside.resolve("allowed.test", box.info.gateway)
    assert answer["rcode"] == 3
    assert (await harness.denial(box.id, proto="dns"))["host"] == "allowed.test"


async def test_allow_list_by_cidr(harness: Harness) -> None:
    box = await harness.box(deny_all(f"{harness.world.net}.0/30"))
    assert await box.inside.reaches(harness.world.out1)
    assert not await box.inside.reaches(harness.world.out2)
    await harness.denial(box.id, dst=harness.world.out2, port=80)


async def test_allow_list_by_hostname_needs_our_resolver(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(deny_all("allowed.test"))
    assert not await box.inside.reaches(w.out1), "a hardcoded address opens nothing"
    assert not (await box.inside.resolve("other.test", w.out1, tcp=True))["ok"], "nor another resolver"
    answer = await box.inside.resolve("allowed.test", box.info.gateway)
    assert answer == {"ok": True, "rcode": 0, "addresses": [w.out1]}
    assert await box.inside.reaches(w.out1)
    assert (await box.inside.resolve("other.test", box.info.gateway))["rcode"] == 3
    assert not await box.inside.reaches(w.out2)
    await harness.denial(box.id, proto="dns", host="other.test")
    await harness.denial(box.id, dst=w.out2)


async def test_cname_to_an_allowed_chain_and_wildcards(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(deny_all("alias.test", "*.wild.test", deny=("bad.wild.test",)))
    answer = await box.inside.resolve("alias.test", box.info.gateway)
    assert answer["rcode"] == 0 and answer["addresses"] == [w.out1]
    assert await box.inside.reaches(w.out1)
    assert (await box.inside.resolve("a.wild.test", box.info.gateway))["addresses"] == [w.out2]
    assert await box.inside.reaches(w.out2)
    assert (await box.inside.resolve("wild.test", box.info.gateway))["rcode"] == 3, "*.x is not x"
    assert (await box.inside.resolve("bad.wild.test", box.info.gateway))["rcode"] == 3, "deny wins"


async def test_private_answers_are_not_pinned_by_default(harness: Harness) -> None:
    await harness.network.close()
    harness.network = harness.make(pin_private=False)
    box = await harness.box(deny_all("allowed.test"))
    answer = await box.inside.resolve("allowed.test", box.info.gateway)
    assert answer["addresses"] == [harness.world.out1]
    assert not await box.inside.reaches(harness.world.out1)
    assert (await harness.denial(box.id, dst=harness.world.out1))["host"] == "allowed.test"


@pytest.mark.parametrize("policy", [ALLOW_ALL, deny_all("0.0.0.0/0")], ids=["allow_all", "allow_0/0"])
async def test_host_other_sandboxes_and_link_local_are_always_denied(
    harness: Harness, policy: EgressPolicy
) -> None:
    w = harness.world
    a = await harness.box(policy)
    b = await harness.box(policy)
    await b.inside.call("listen", port=8000)
    gateway = a.info.gateway
    # each target is live: the host itself reaches it
    assert host_connects(gateway, w.host_port)
    assert host_connects(f"{w.net}.1", w.host_port)
    assert host_connects(b.info.address, 8000)
    assert host_connects("169.254.169.254", 80)
    published = await output(
        "ip", "netns", "exec", f"crlo{w.tag}2", sys.executable, "-c",
        f"import socket; s = socket.create_connection(('{w.net}.5', 8081), timeout=1);"
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(100))",
    )  # fmt: skip
    assert "200 OK" in published, "the published port works from outside"
    assert await a.inside.reaches(w.out1), "the policy itself lets traffic out"
    assert not await a.inside.reaches(gateway, w.host_port)
    assert not await a.inside.reaches(f"{w.net}.1", w.host_port)
    assert not await a.inside.reaches(b.info.address, 8000)
    assert not await a.inside.reaches("169.254.169.254", 80)
    assert not await a.inside.reaches(f"{w.net}.5", 8081), "a port the host publishes by DNAT"
    assert (await a.inside.resolve("other.test", gateway))["ok"], "DNS on the gateway is open"
    await harness.denial(a.id, dst=gateway, port=w.host_port, reason="host")
    await harness.denial(a.id, dst=b.info.address, port=8000, reason="reserved")
    await harness.denial(a.id, dst="169.254.169.254", reason="reserved")


async def test_set_policy_applies_at_once_also_to_open_connections(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(ALLOW_ALL)
    assert (await box.inside.call("hold", key="c", host=w.out1, port=80))["ok"]
    await harness.network.set_policy(box.id, deny_all(f"{w.net}.4/30"))
    assert not await box.inside.reaches(w.out1)
    assert await box.inside.reaches(w.out2)
    assert not (await box.inside.call("send", key="c", text="again"))["ok"], "open flow is cut"
    await harness.network.set_policy(box.id, ALLOW_ALL)
    assert await box.inside.reaches(w.out1)
    await harness.network.set_policy(box.id, EgressPolicy(deny=(f"{w.out1}/32",)))
    assert not await box.inside.reaches(w.out1)
    assert await box.inside.reaches(w.out2)


async def test_allow_all_with_a_denied_name_blocks_its_addresses(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(EgressPolicy(deny=("other.test",)))
    assert (await box.inside.resolve("other.test", box.info.gateway))["rcode"] == 3
    # the node looked the name up itself and closed its address, even when hardcoded

    async def closed() -> bool:
        return not await box.inside.reaches(w.out2)

    await eventually_async(closed, 2, "its address stayed open")
    assert await box.inside.reaches(w.out1)
    assert (await harness.denial(box.id, dst=w.out2))["host"] == "other.test"


async def test_detach_removes_everything_and_is_idempotent(harness: Harness) -> None:
    box = await harness.box(deny_all("allowed.test"))
    await box.inside.resolve("allowed.test", box.info.gateway)
    await box.inside.stop()
    port = harness.host_end(box.id)
    assert port is not None
    started = time.perf_counter()
    await harness.network.detach(box.id)
    elapsed = time.perf_counter() - started
    assert not os.path.exists(box.info.netns_path)
    assert not os.path.exists(f"/sys/class/net/{port}")
    assert nft_objects(harness.world.table, box.id) == ""
    assert box.id not in (harness.state_dir / "network.json").read_text()
    assert await harness.network.info(box.id) is None
    await harness.network.detach(box.id)
    with pytest.raises(NotFound):
        await harness.network.set_policy(box.id, ALLOW_ALL)
    print(f"detach took {elapsed * 1000:.1f} ms")


async def test_attach_is_all_or_nothing(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeFailure("injected")

    monkeypatch.setattr(harness.network.firewall, "attach", broken)
    sid = "sb-" + "f" * 16
    await harness.ready(4)
    for claims in (True, False):  # a ready namespace first; then, the pool drained, its own
        if not claims:
            await harness.network.drain()
        with pytest.raises(RuntimeFailure):
            await harness.network.attach(sid, ALLOW_ALL)
        assert not os.path.exists(f"/run/netns/{harness.world.prefix}{sid}")
        assert not os.path.exists(f"/sys/class/net/{namespace.veth_name(sid)}")
        assert harness.host_end(sid) is None
        assert await harness.network.info(sid) is None
    monkeypatch.undo()
    box = await harness.box(ALLOW_ALL, sid=sid)
    assert await box.inside.reaches(harness.world.out1)


async def test_contract_errors(harness: Harness) -> None:
    box = await harness.box(ALLOW_ALL)
    with pytest.raises(Conflict):
        await harness.network.attach(box.id, ALLOW_ALL)
    with pytest.raises(InvalidInput):
        await harness.network.attach("sb-../../etc", ALLOW_ALL)
    with pytest.raises(InvalidInput, match=r"egress.allow\[0\]"):
        await harness.network.set_policy(box.id, deny_all("10.0.0.0/33"))
    with pytest.raises(NotFound):
        await harness.network.set_policy("sb-" + "0" * 16, ALLOW_ALL)


async def test_restart_keeps_allocations_and_reclaim_removes_leaks(harness: Harness) -> None:
    w = harness.world
    kept = await harness.box(deny_all("allowed.test"))
    leaked = await harness.box(ALLOW_ALL)
    await harness.network.close()
    harness.network = harness.make()
    assert await harness.network.info(kept.id) == kept.info
    assert (await kept.inside.resolve("allowed.test", kept.info.gateway))["rcode"] == 0, "policy survived"
    assert await kept.inside.reaches(w.out1)
    port = "vc" + "d" * 12
    await output("ip", "link", "add", port, "type", "veth", "peer", "name", "vc" + "b" * 12)
    await output("ip", "link", "set", port, "master", w.bridge)
    stray = f"{w.prefix}sb-{'e' * 16}"
    await (await asyncio.create_subprocess_exec("ip", "netns", "add", stray)).wait()
    removed = await harness.network.reclaim({kept.id})
    assert removed == sorted([leaked.id, "sb-" + "e" * 16])
    assert not os.path.exists(leaked.info.netns_path) and not Path("/run/netns", stray).exists()
    assert nft_objects(w.table, leaked.id) == ""
    assert not os.path.exists(f"/sys/class/net/{port}")
    assert await kept.inside.reaches(w.out1)
    fresh = await harness.box(ALLOW_ALL)
    assert fresh.info.address not in (kept.info.address, leaked.info.address)


async def test_attach_and_detach_are_fast(harness: Harness) -> None:
    times = []
    sids = []
    for _ in range(10):
        sid = "sb-" + os.urandom(8).hex()
        started = time.perf_counter()
        await harness.network.attach(sid, ALLOW_ALL)
        times.append(time.perf_counter() - started)
        sids.append(sid)
    detach_times = []
    for sid in sids:
        started = time.perf_counter()
        await harness.network.detach(sid)
        detach_times.append(time.perf_counter() - started)
    print(f"attach ms: {sorted(round(t * 1000, 1) for t in times)}")
    print(f"detach ms: {sorted(round(t * 1000, 1) for t in detach_times)}")
    assert sorted(times)[5] < 0.1


async def test_a_sandbox_cannot_forge_another_ones_address(harness: Harness) -> None:
    w = harness.world
    a = await harness.box(ALLOW_ALL)
    b = await harness.box(ALLOW_ALL)
    await b.inside.call("udp_listen", port=7777)
    assert (await b.inside.call("udp_send", host=w.out1, port=7, text="from-b"))["body"] == "from-b"
    await a.inside.call("spoof_udp", src=b.info.address, sport=7777, dst=w.out1, dport=7, text="forged")
    assert not (await b.inside.call("udp_received"))["ok"], "a forged source never leaves the bridge port"
    await a.inside.call("udp_listen", port=7778)
    await a.inside.call("spoof_udp", src=a.info.address, sport=7778, dst=w.out1, dport=7, text="honest")
    assert (await a.inside.call("udp_received"))["body"] == "honest", "raw packets with its own address pass"


async def test_a_flood_of_denied_attempts_gives_few_events(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(DENY_ALL)
    assert (await box.inside.call("flood", host=w.out1, port=80, count=300))["failed"] == 300
    await harness.denial(box.id, dst=w.out1)
    await asyncio.sleep(0.3)
    events = [e for sid, e in harness.events if sid == box.id]
    assert 1 <= len(events) <= 10  # the burst; no time passed for more
    harness.clock.advance(1.1)  # a token comes back (rate 1/s)
    assert not await box.inside.reaches(w.out1)
    event = await harness.denial(box.id, dst=w.out1, port=80, proto="tcp", host=None, reason="policy")
    later = [e for sid, e in harness.events if sid == box.id and "suppressed" in e]
    assert later and int(later[-1]["suppressed"]) > 0, event  # type: ignore[call-overload]


async def test_concurrent_attaches_get_distinct_addresses(harness: Harness) -> None:
    sids = ["sb-" + os.urandom(8).hex() for _ in range(12)]
    infos = await asyncio.gather(*(harness.network.attach(sid, ALLOW_ALL) for sid in sids))
    assert len({info.address for info in infos}) == len(sids)
    inside = await harness.box(ALLOW_ALL)
    assert await inside.inside.reaches(harness.world.out1)
    await asyncio.gather(*(harness.network.detach(sid) for sid in sids))
    assert not any(os.path.exists(info.netns_path) for info in infos)
    assert all(nft_objects(harness.world.table, sid) == "" for sid in sids)


async def test_restart_rebuilds_what_was_lost(harness: Harness) -> None:
    w = harness.world
    box = await harness.box(deny_all(f"{w.net}.0/30"))
    other = await harness.box(ALLOW_ALL)
    # the firewall was flushed while corral was down: rebuilt from the ledger
    await harness.network.close()
    await output("nft", "delete", "table", "inet", w.table)
    harness.network = harness.make()
    assert await harness.network.info(box.id) == box.info
    assert await box.inside.reaches(w.out1) and not await box.inside.reaches(w.out2)
    assert await other.inside.reaches(w.out2)
    # the ledger is lost as well: addresses come from the namespaces, policies fail closed
    await harness.network.close()
    (harness.state_dir / "network.json").write_text("{not json")
    await output("nft", "delete", "table", "inet", w.table)
    harness.network = harness.make()
    assert await harness.network.info(box.id) == box.info
    assert await harness.network.info(other.id) == other.info
    assert not await other.inside.reaches(w.out2), "deny_all"
    assert (harness.state_dir / "network.json.bad").exists()
    # the ledger alone is lost: addresses come from the firewall, policies fail closed
    await harness.network.set_policy(other.id, ALLOW_ALL)
    await harness.network.close()
    (harness.state_dir / "network.json").unlink()
    harness.network = harness.make()
    assert await harness.network.info(other.id) == other.info
    assert not await other.inside.reaches(w.out2), "deny_all"


async def test_firewall_transactions_with_and_without_the_library(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert nftlib.available(), "libnftables is installed with nft"
    with pytest.raises(RuntimeFailure, match="nosuchtable"):
        await nftlib.apply("add rule inet nosuchtable nochain accept\n")
    monkeypatch.setattr(nftlib, "available", lambda: False)  # the nft tool instead
    box = await harness.box(deny_all(f"{harness.world.out1}/32"))
    assert await box.inside.reaches(harness.world.out1)
    assert not await box.inside.reaches(harness.world.out2)


def nft_table(table: str) -> dict[str, list[dict[str, Any]]]:
    """The chains, sets and maps of ``table inet <table>`` as nft's JSON, by kind."""
    argv = ["nft", "-j", "list", "table", "inet", table]
    items = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True, timeout=10).stdout)
    out: dict[str, list[dict[str, Any]]] = {"chain": [], "set": [], "map": [], "rule": []}
    for item in items["nftables"]:
        for kind, found in out.items():
            if kind in item:
                found.append(item[kind])
    return out


async def elements(table: str) -> list[str]:
    """The elements of a sandbox's (the map's and the shared sets', by source address;
    not the rate buckets')."""
    text = await output("nft", "list", "table", "inet", table)
    return [f"{m[0]} {m[1]}" for m in re.findall(r"([0-9.]+) (\. [0-9./-]+|comment)", text)]


async def test_a_sandbox_adds_elements_never_chains_or_sets(harness: Harness) -> None:
    """What an attach costs must not grow with the number of sandboxes: libnftables
    reads every chain and set of the table before each transaction. So the table has
    the same chains, sets and rules with 0 or 6 sandboxes of every kind attached; the
    sandboxes are only elements, and a detach deletes all of its own."""
    w = harness.world
    await harness.ready(4)

    def shape() -> tuple[list[str], list[str], int]:
        table = nft_table(w.table)
        return (
            sorted(c["name"] for c in table["chain"]),
            sorted(s["name"] for s in table["set"] + table["map"]),
            len(table["rule"]),
        )

    empty = shape()
    boxes = [
        await harness.box(deny_all("allowed.test", f"{w.net}.0/24", deny=(f"{w.out2}/32",))),
        await harness.box(EgressPolicy(mode=EgressMode.ALLOW_ALL, deny=("other.test",), audit_allowed=True)),
        await harness.box(
            EgressPolicy(mode=EgressMode.DENY_ALL, allow=("allowed.test",), audit_allowed=True)
        ),
    ]
    await harness.network.drain()  # the rest make namespaces of their own
    boxes += [
        await harness.box(ALLOW_ALL),
        await harness.box(DENY_ALL),
        await harness.box(deny_all("*.test")),
    ]
    for box in (boxes[0], boxes[2], boxes[5]):
        assert (await box.inside.resolve("allowed.test", box.info.gateway))["rcode"] == 0
        assert await box.inside.reaches(w.out1), "pinned"
    assert not await boxes[0].inside.reaches(w.out2), "deny wins over allow"
    assert (await boxes[1].inside.resolve("other.test", boxes[1].info.gateway))["rcode"] == 3
    assert not await boxes[1].inside.reaches(w.out2), "blocked"
    assert shape() == empty, "one more sandbox adds no chain, set or rule"
    written = await elements(w.table)
    assert all(f"{box.info.address} comment" in written for box in boxes), written
    assert f"{boxes[0].info.address} . {w.out2}" in written, "its denied network"
    for box in boxes:
        await box.inside.stop()
        await harness.network.detach(box.id)
    assert shape() == empty
    assert not [line for line in await elements(w.table) if any(b.info.address in line for b in boxes)]


async def test_an_upgraded_node_moves_per_sandbox_chains_into_the_shared_sets(harness: Harness) -> None:
    """A node of an earlier version gave each sandbox a chain and ``-pin``, ``-block``
    and ``-live`` sets: at start the chain and sets go, the sandbox keeps its policy
    (from the ledger) and its pins (from its old set: this process never resolved the
    name), and detach removes the rest."""
    w = harness.world
    box = await harness.box(deny_all("allowed.test"))
    assert (await box.inside.resolve("allowed.test", box.info.gateway))["rcode"] == 0
    assert await box.inside.reaches(w.out1)
    await harness.network.close()
    # the kernel as the earlier version left it (its rules, in its layout)
    t, sid, address = f"inet {w.table}", harness.network._sandboxes[box.id].chain, box.info.address
    rule = f"add rule {t} {sid}"
    live = f"update @{sid}-live {{ ip daddr timeout 30m }}"
    await harness.network.firewall._apply(
        [
            f"delete element {t} sandboxes {{ {address} }}",
            f"delete element {t} pin {{ {address} . {w.out1} }}",
            f"add chain {t} {sid}",
            f"add set {t} {sid}-pin {{ type ipv4_addr; flags timeout; }}",
            f"add set {t} {sid}-block {{ type ipv4_addr; flags timeout; }}",
            f"add set {t} {sid}-live {{ type ipv4_addr; flags dynamic,timeout; size 4096; }}",
            f"add element {t} {sid}-pin {{ {w.out1} timeout 600s }}",
            f"{rule} ip daddr @{sid}-block goto deny_policy",
            f"{rule} ip daddr @{sid}-pin {live}",
            f"{rule} ip daddr @{sid}-pin accept",
            f"{rule} ct state established,related ip daddr @{sid}-live {live} accept",
            f"{rule} goto deny_policy",
            f"add element {t} sandboxes {{ {address} : goto {sid} }}",
        ]
    )
    assert await box.inside.reaches(w.out1) and not await box.inside.reaches(w.out2), "the old layout works"
    harness.network = harness.make()
    await harness.network.start()
    table = nft_table(w.table)
    assert sid not in {c["name"] for c in table["chain"]} and not [
        s for s in table["set"] if sid in s["name"]
    ]
    assert await box.inside.reaches(w.out1), "its pin came along"
    assert not await box.inside.reaches(w.out2), "its policy came along"
    await harness.denial(box.id, dst=w.out2)
    await box.inside.stop()
    await harness.network.detach(box.id)
    assert not [line for line in await elements(w.table) if address in line]
