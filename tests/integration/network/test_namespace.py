"""namespace.create and namespace.remove against the real kernel, on a bridge, a
namespace and veth names of this test's own (``crlq<tag>...``); traffic only between
the host and a namespace the test made, on an address range of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral.errors import RuntimeFailure
from corral.network import command, namespace

pytestmark = pytest.mark.integration


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=10)
    return done.stdout


def ip_json(*args: str) -> Any:
    return json.loads(ip("-j", *args) or "[]")


@dataclass
class Site:
    """A bridge of the test's own, with its gateway address, up."""

    tag: str
    bridge: str
    net: str  # 198.19.<n>

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"{self.net}.1")

    def names(self, n: int) -> tuple[str, str]:
        return f"crlq{self.tag}-ns{n}", f"crlq{self.tag}v{n}"


@pytest.fixture
def site() -> Iterator[Site]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip")
    tag = secrets.token_hex(3)
    made = Site(tag, f"crlq{tag}br", f"198.19.{secrets.randbelow(250) + 2}")
    ip("link", "add", made.bridge, "type", "bridge")
    try:
        ip("addr", "add", f"{made.gateway}/24", "dev", made.bridge)
        ip("link", "set", made.bridge, "up")
        yield made
    finally:
        for name in os.listdir(namespace.NETNS_DIR):
            if name.startswith(f"crlq{tag}"):
                ip("netns", "del", name, check=False)
        for link in ip_json("link", "show"):
            if str(link.get("ifname", "")).startswith(f"crlq{tag}"):
                ip("link", "del", link["ifname"], check=False)


@contextlib.asynccontextmanager
async def made(site: Site, n: int, address: str) -> AsyncIterator[tuple[str, str]]:
    netns, veth = site.names(n)
    try:
        await namespace.create(netns, veth, site.bridge, address, site.gateway)
        yield netns, veth
    finally:
        await namespace.remove(netns, veth)


def mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == path for line in info)


def connected_from(netns: str, host: str) -> tuple[str, bytes]:
    """A TCP connection from a program in ``netns`` to a server of this test on
    ``host``: the client's address and what it sent."""
    with socket.create_server((host, 0)) as server:
        port = server.getsockname()[1]
        connect = f"import socket; socket.create_connection(('{host}', {port}), 5).send(b'hi')"
        client = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", connect])
        try:
            server.settimeout(10)
            conn, peer = server.accept()
            with conn:
                return peer[0], conn.recv(2)
        finally:
            assert client.wait(10) == 0


def inside(netns: str, *argv: str) -> str:
    done = subprocess.run(["ip", "netns", "exec", netns, *argv], check=True, capture_output=True, text=True)
    return done.stdout


async def test_create_makes_the_namespace_the_port_and_the_inside(site: Site) -> None:
    address = f"{site.net}.7"
    async with made(site, 1, address) as (netns, veth):
        assert netns in ip("netns", "list").split()
        assert mounted(namespace.netns_path(netns)), "the namespace is bind-mounted on its file"
        assert any(
            line.split()[4] == str(namespace.NETNS_DIR) and "shared:" in line
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
        ), "/run/netns is a mount point with shared propagation"

        [port] = ip_json("-d", "link", "show", veth)
        assert port["master"] == site.bridge
        assert port["linkinfo"]["info_kind"] == "veth"
        assert port["linkinfo"]["info_slave_kind"] == "bridge"
        assert port["linkinfo"]["info_slave_data"]["isolated"] is True
        assert "UP" in port["flags"] and port["operstate"] == "UP"
        [peer] = ip_json("-n", netns, "link", "show", "dev", "eth0")
        assert peer["link_index"] == port["ifindex"], "eth0 in the namespace is the host end's peer"

        [eth0] = ip_json("-n", netns, "addr", "show", "dev", "eth0")
        assert eth0["operstate"] == "UP"
        assert [(a["family"], a["local"], a["prefixlen"]) for a in eth0["addr_info"]] == [
            ("inet", address, 32)
        ]
        [route] = ip_json("-n", netns, "route", "show", "default")
        assert (route["gateway"], route["dev"], route["flags"]) == (str(site.gateway), "eth0", ["onlink"])
        assert "UP" in ip_json("-n", netns, "link", "show", "dev", "lo")[0]["flags"]
        assert inside(netns, "cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6").strip() == "1"
        assert inside(netns, "cat", "/proc/sys/net/ipv4/ping_group_range").split() == ["0", "2147483647"]
        assert [link["ifname"] for link in ip_json("-n", netns, "link", "show")] == ["lo", "eth0"]

        # The pair carries traffic: the namespace reaches the host on the bridge's address.
        assert connected_from(netns, str(site.gateway)) == (address, b"hi")
    assert netns not in ip("netns", "list").split()
    assert not mounted(namespace.netns_path(netns))
    assert not namespace.link_exists(veth)


async def test_remove_leaves_nothing_and_is_idempotent(site: Site) -> None:
    netns, veth = site.names(2)
    await namespace.create(netns, veth, site.bridge, f"{site.net}.8", site.gateway)
    await namespace.remove(netns, veth)
    assert not os.path.exists(namespace.netns_path(netns)) and not mounted(namespace.netns_path(netns))
    assert not namespace.link_exists(veth) and not namespace.exists(netns)
    assert veth not in {p.name for p in Path("/sys/class/net", site.bridge, "brif").iterdir()}
    await namespace.remove(netns, veth)  # nothing to do: no error


async def test_remove_finishes_what_someone_else_half_removed(site: Site) -> None:
    netns, veth = site.names(8)
    await namespace.create(netns, veth, site.bridge, f"{site.net}.14", site.gateway)
    ip("link", "del", veth)
    await namespace.remove(netns, veth)
    assert not namespace.exists(netns) and not mounted(namespace.netns_path(netns))
    await namespace.create(netns, veth, site.bridge, f"{site.net}.14", site.gateway)
    ip("netns", "del", netns)
    await namespace.remove(netns, veth)
    assert not namespace.link_exists(veth)


async def test_remove_link_deletes_a_host_interface_and_is_idempotent(site: Site) -> None:
    end, peer = f"crlq{site.tag}a", f"crlq{site.tag}b"
    ip("link", "add", end, "type", "veth", "peer", "name", peer)
    await namespace.remove_link(end)
    assert not namespace.link_exists(end) and not namespace.link_exists(peer)
    await namespace.remove_link(end)


async def test_a_taken_name_fails_naming_the_step_leaves_nothing_and_the_other_intact(site: Site) -> None:
    async with made(site, 3, f"{site.net}.9") as (netns, veth):
        other_netns, other_veth = site.names(4)
        with pytest.raises(RuntimeFailure, match=f"creating namespace file .*{netns}"):
            await namespace.create(netns, other_veth, site.bridge, f"{site.net}.10", site.gateway)
        assert not namespace.link_exists(other_veth)
        with pytest.raises(RuntimeFailure, match=f"{other_netns}: creating veth {veth}"):
            await namespace.create(other_netns, veth, site.bridge, f"{site.net}.10", site.gateway)
        assert not namespace.exists(other_netns) and not mounted(namespace.netns_path(other_netns))
        # the first one is untouched: its namespace, its veth (the taken name) and its port
        assert namespace.exists(netns) and mounted(namespace.netns_path(netns))
        [eth0] = ip_json("-n", netns, "addr", "show", "dev", "eth0")
        assert [a["local"] for a in eth0["addr_info"]] == [f"{site.net}.9"]
        [port] = ip_json("-d", "link", "show", veth)
        assert port["master"] == site.bridge and port["linkinfo"]["info_slave_data"]["isolated"] is True


async def test_a_failure_after_the_pair_was_made_undoes_the_pair_and_the_namespace(site: Site) -> None:
    netns, veth = site.names(9)
    not_a_bridge = f"crlq{site.tag}x"  # a veth end of this test's own: it cannot take ports
    ip("link", "add", not_a_bridge, "type", "veth", "peer", "name", f"crlq{site.tag}y")
    with pytest.raises(RuntimeFailure, match=f"{netns}: making {veth} a port of {not_a_bridge}"):
        await namespace.create(netns, veth, not_a_bridge, f"{site.net}.15", site.gateway)
    assert not namespace.link_exists(veth)
    assert not namespace.exists(netns) and not mounted(namespace.netns_path(netns))
    assert namespace.link_exists(not_a_bridge)


async def test_a_missing_bridge_fails_before_anything_is_made(site: Site) -> None:
    netns, veth = site.names(5)
    with pytest.raises(RuntimeFailure, match=f"finding bridge crlq{site.tag}none"):
        await namespace.create(netns, veth, f"crlq{site.tag}none", f"{site.net}.11", site.gateway)
    assert not namespace.exists(netns) and not namespace.link_exists(veth)


async def test_a_cancelled_create_returns_once_its_thread_is_done(site: Site) -> None:
    netns, veth = site.names(6)
    try:
        task = asyncio.create_task(namespace.create(netns, veth, site.bridge, f"{site.net}.12", site.gateway))
        await asyncio.sleep(0)  # the task starts its thread and waits for it
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Nothing is still being made behind the caller's back: the work is complete.
        [eth0] = ip_json("-n", netns, "addr", "show", "dev", "eth0")
        assert [a["local"] for a in eth0["addr_info"]] == [f"{site.net}.12"]
        assert ip_json("-d", "link", "show", veth)[0]["linkinfo"]["info_slave_data"]["isolated"] is True
    finally:
        await namespace.remove(netns, veth)
    assert not namespace.exists(netns) and not namespace.link_exists(veth)


async def test_a_background_create_makes_the_same(site: Site) -> None:
    with command.in_background():
        async with made(site, 7, f"{site.net}.13") as (netns, veth):
            assert ip_json("-d", "link", "show", veth)[0]["linkinfo"]["info_slave_data"]["isolated"] is True
            assert ip_json("-n", netns, "route", "show", "default")[0]["gateway"] == str(site.gateway)


_MAKE_DIR = """
import ctypes, json, sys
sys.path.insert(0, sys.argv[1])
from corral.network import namespace
libc = ctypes.CDLL(None, use_errno=True)
while libc.umount2(b"/run/netns", 2) == 0:  # in this private mount namespace only
    pass
def state():
    lines = [l.split() for l in open("/proc/self/mountinfo") if l.split()[4] == "/run/netns"]
    return [[f for f in l[6:l.index("-")] if f.startswith("shared:")] for l in lines]
before = state()
namespace._netns_dir()
namespace._dir_ready = False
namespace._netns_dir()  # a second setup finds the mount point shared and stacks nothing
print(json.dumps([before, state()]))
"""


def test_run_netns_is_made_a_shared_mount_point_when_it_is_not_one() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    root = str(Path(__file__).parents[3])
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", _MAKE_DIR, root]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
    before, after = json.loads(done.stdout)
    assert before == [], "in the test's mount namespace /run/netns starts as a plain directory"
    assert len(after) == 1 and len(after[0]) == 1, f"one mount point, shared: {after}"
