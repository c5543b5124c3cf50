"""The firewall's scripts without the kernel (corral/network/firewall.py): a sandbox is
elements only (no chain, set or rule of its own), a detach deletes what its attach and
pins wrote and nothing of another address, and nft's JSON for the shared sets is read
back as written. The kernel's side is tested in tests/integration/network/."""

from __future__ import annotations

import ipaddress
import re

import pytest

from corral.domain import EgressMode
from corral.network import firewall
from corral.network.firewall import Firewall, _pair, mode_chain
from corral.network.policy import Rules

POOL = ipaddress.IPv4Network("10.250.0.0/24")


def rules(
    mode: EgressMode, allow: tuple[str, ...] = (), deny: tuple[str, ...] = (), audit: bool = False
) -> Rules:
    nets = [tuple(ipaddress.IPv4Network(n) for n in group) for group in (allow, deny)]
    return Rules(mode, nets[0], nets[1], frozenset(), (), False, frozenset(), (), False, audit)


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> tuple[Firewall, list[list[str]]]:
    fw = Firewall(table="t", bridge="br0", network=POOL, gateway=POOL[1], group=1)
    fw.updates_timeouts = True
    applied: list[list[str]] = []

    async def apply(script: list[str]) -> None:
        applied.append(list(script))

    monkeypatch.setattr(fw, "_apply", apply)
    return fw, applied


def test_mode_chains() -> None:
    assert mode_chain(rules(EgressMode.ALLOW_ALL)) == "allow_all"
    assert mode_chain(rules(EgressMode.DENY_ALL, audit=True)) == "deny_all_audit"
    assert {mode_chain(rules(m, audit=a)) for m in EgressMode for a in (False, True)} == set(firewall.MODES)


async def test_a_sandbox_is_elements_and_detach_deletes_its_own(
    scripts: tuple[Firewall, list[list[str]]],
) -> None:
    fw, applied = scripts
    a, b = "sb-" + "a" * 16, "sb-" + "b" * 16
    await fw.attach(
        a, "va", "10.250.0.2", rules(EgressMode.DENY_ALL, ("1.2.3.0/24", "1.2.3.4/32"), ("9.0.0.0/8",))
    )
    await fw.attach(b, "vb", "10.250.0.3", rules(EgressMode.ALLOW_ALL, deny=("8.8.8.8/32",)))
    await fw.pin(a, "pin", [("5.5.5.5", 60)])
    await fw.pin(b, "block", [("6.6.6.6", 60)])
    lines = [line for script in applied for line in script]
    assert all(re.match(r"(add|delete) element ", line) for line in lines), lines
    assert (
        'add element inet t sandboxes { 10.250.0.2 comment "sb-aaaaaaaaaaaaaaaa" : goto deny_all }' in lines
    )
    assert "add element inet t allow24 { 10.250.0.2 . 1.2.3.0 }" in lines, "networks merged, by length"
    assert "add element inet t allows { 10.250.0.2 }" in lines
    assert "add element inet t deny8 { 10.250.0.2 . 9.0.0.0 }" in lines
    assert "add element inet t pin { 10.250.0.2 . 5.5.5.5 timeout 60s }" in lines
    assert await fw.bindings() == {a: "10.250.0.2", b: "10.250.0.3"}
    applied.clear()
    await fw.detach(a, "va", None)
    deleted = [line for line in applied[0] if line.startswith("delete ")]
    assert {line.split(" {")[0].split()[-1] for line in deleted} == {
        "sandboxes",
        "deny8",
        "denies",
        "allow24",
        "allows",
        "pin",
        "live",
        "ports",
        "bound",
    }
    assert not [line for line in applied[0] if "10.250.0.3" in line], "nothing of another sandbox"
    for line in deleted:  # each deletion follows an add of the same element: idempotent
        assert line.replace("delete ", "add ", 1).split(" {")[0] in {
            added.split(" {")[0] for added in applied[0]
        }
    assert await fw.bindings() == {b: "10.250.0.3"}
    applied.clear()
    await fw.detach(a, "va", None)  # again: nothing known of it but its port
    assert applied == [['add element bridge t ports { "va" }', 'delete element bridge t ports { "va" }']]


async def test_replace_swaps_the_route_networks_and_pins(scripts: tuple[Firewall, list[list[str]]]) -> None:
    fw, applied = scripts
    a = "sb-" + "a" * 16
    await fw.attach(a, "va", "10.250.0.2", rules(EgressMode.DENY_ALL, ("1.2.3.0/24",)))
    await fw.pin(a, "pin", [("5.5.5.5", 60), ("7.7.7.7", 60)])
    applied.clear()
    await fw.replace(a, rules(EgressMode.ALLOW_ALL, audit=True), [], [("5.5.5.5", 30)])
    script = applied[0]
    assert script.index("delete element inet t sandboxes { 10.250.0.2 }") < script.index(
        'add element inet t sandboxes { 10.250.0.2 comment "sb-aaaaaaaaaaaaaaaa" : goto allow_all_audit }'
    )
    assert "delete element inet t allow24 { 10.250.0.2 . 1.2.3.0 }" in script
    assert "delete element inet t allows { 10.250.0.2 }" in script
    assert "delete element inet t live { 10.250.0.2 . 5.5.5.5, 10.250.0.2 . 7.7.7.7 }" in script
    assert script[-1] == "add element inet t block { 10.250.0.2 . 5.5.5.5 timeout 30s }"


def test_the_shared_sets_json_is_read_back_as_written() -> None:
    assert _pair({"concat": ["10.0.0.5", {"prefix": {"addr": "0.0.0.0", "len": 0}}]}) == (
        "10.0.0.5",
        "0.0.0.0/0",
    )
    assert _pair({"concat": ["10.0.0.6", "5.6.7.8"]}) == ("10.0.0.6", "5.6.7.8")
    assert _pair({"concat": ["10.0.0.6", {"range": ["5.0.0.0", "5.0.0.9"]}]}) == (
        "10.0.0.6",
        "5.0.0.0-5.0.0.9",
    )
    assert _pair({"concat": ["10.0.0.6", {"range": ["5.0.0.0", "5.0.0.255"]}]}) == ("10.0.0.6", "5.0.0.0/24")
    timed = {"elem": {"val": {"concat": ["10.0.0.7", "1.1.1.1"]}, "timeout": 60, "expires": 59}}
    assert _pair(timed) == ("10.0.0.7", "1.1.1.1")
    assert _pair("10.0.0.7") is None and _pair({"concat": ["10.0.0.7"]}) is None
