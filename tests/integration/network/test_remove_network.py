"""``remove_network`` (``tests/support/host_network.py``) against the real kernel: what a
stopped server leaves of its network (bridge, veths on it, namespaces ``<bridge>-*``,
both nftables tables, state dir), made here under names of this test's own, is gone
afterwards; a second call is fine; a neighbouring network whose names share a prefix
with it is left whole."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.host_network import network_leftovers, remove_network

pytestmark = pytest.mark.integration


@dataclass
class Made:
    bridge: str
    netns: str
    veths: list[str]  # host ends on the bridge
    state_dir: Path


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout


def _make(bridge: str, tag: str, state_dir: Path) -> Made:
    """A network as a server leaves it: the bridge, a namespace ``<bridge>-x`` with a
    veth from it plugged into the bridge, one more veth on the bridge whose peer is on
    the host, both tables with a chain and a set, and a state dir with a ledger."""
    netns = f"{bridge}-x"
    inner, outer, peer = f"rm{tag}i", f"rm{tag}o", f"rm{tag}p"
    _sh("ip", "link", "add", bridge, "type", "bridge")
    _sh("ip", "netns", "add", netns)
    _sh("ip", "link", "add", inner, "type", "veth", "peer", "name", "eth0", "netns", netns)
    _sh("ip", "link", "add", outer, "type", "veth", "peer", "name", peer)
    for veth in (inner, outer):
        _sh("ip", "link", "set", veth, "master", bridge)
    script = "".join(
        f"table {family} {bridge} {{\n set s {{ type ipv4_addr; }}\n"
        f" chain c {{ type filter hook forward priority 0; policy accept; }}\n}}\n"
        for family in ("inet", "bridge")
    )
    subprocess.run(["nft", "-f", "-"], input=script, text=True, timeout=30, check=True)
    state_dir.mkdir(parents=True)
    (state_dir / "network.json").write_text(json.dumps({"spares": []}))
    return Made(bridge, netns, [inner, outer], state_dir)


def _links() -> set[str]:
    return {str(link["ifname"]) for link in json.loads(_sh("ip", "-j", "link", "show"))}


def _tables() -> set[str]:
    return {line.removeprefix("table ") for line in _sh("nft", "list", "tables").splitlines()}


def _gone(made: Made) -> None:
    links = _links()
    assert made.bridge not in links and not set(made.veths) & links, links
    assert not [n for n in os.listdir("/run/netns") if n.startswith(f"{made.bridge}-")]
    tables = _tables()
    assert f"inet {made.bridge}" not in tables and f"bridge {made.bridge}" not in tables, tables
    assert not made.state_dir.exists()


def _whole(made: Made) -> None:
    links = _links()
    assert made.bridge in links and set(made.veths) <= links, links
    assert made.netns in os.listdir("/run/netns")
    assert {f"inet {made.bridge}", f"bridge {made.bridge}"} <= _tables()
    assert (made.state_dir / "network.json").is_file()
    ports = set(os.listdir(f"/sys/class/net/{made.bridge}/brif"))
    assert ports == set(made.veths), ports


@pytest.fixture
def networks(tmp_path: Path) -> Iterator[tuple[Made, Made]]:
    """This test's network and a neighbour (its bridge named this one's + ``0``: its
    namespace ``<bridge>0-x`` starts with this bridge's name but not ``<bridge>-``)."""
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("ip"):
        pytest.skip("needs root, ip and nft")
    tag = secrets.token_hex(2)
    bridge = f"corralrm{tag}"
    made: list[Made] = []
    try:
        made.append(_make(bridge, tag, tmp_path / "network"))
        made.append(_make(f"{bridge}0", f"{tag}n", tmp_path / "neighbour"))
        yield made[0], made[1]
    finally:
        remove_network(f"{bridge}0", tmp_path / "neighbour")
        remove_network(bridge, tmp_path / "network")


def test_remove_network_deletes_what_a_server_leaves_and_only_that(networks: tuple[Made, Made]) -> None:
    made, neighbour = networks
    _whole(made)
    _whole(neighbour)
    assert network_leftovers(made.bridge, made.state_dir)

    remove_network(made.bridge, made.state_dir)

    _gone(made)
    assert network_leftovers(made.bridge, made.state_dir) == []
    remove_network(made.bridge, made.state_dir)  # again: nothing there, no error
    _gone(made)
    _whole(neighbour)


def test_remove_network_refuses_a_name_that_is_no_bridge_name(tmp_path: Path) -> None:
    for bad in ("", "../x", "a" * 16, "br 0"):
        with pytest.raises(ValueError, match="bad bridge name"):
            remove_network(bad, tmp_path)
