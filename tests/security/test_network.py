"""Network: a sandbox reaches neither the host, nor another sandbox, nor link-local
metadata, and cannot send as someone else.

Targets are only the security server's own bridge address, its sandboxes' addresses
and loopback (and 169.254.169.254, dropped at the bridge). The host side listens for
real (TCP and UDP on the bridge address and on 127.0.0.1, started by the test), and so
does the other org's sandbox (TCP and UDP on its address, logging what it hears): an
attack fails only if nothing arrived, and a control (the resolver on the bridge, the
bystander reaching itself) shows the path would have carried it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.security.conftest import SecurityServer, Tenant
from tests.security.dns_upstream import DnsUpstream
from tests.support.conditions import eventually

TCP_PORT = 8000
UDP_PORT = 9999

_LISTENER = r"""
import socket, threading, time
log = open("/tmp/heard", "a", buffering=1)
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", TCP_PORT)); tcp.listen(64)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("0.0.0.0", UDP_PORT))
def tcp_loop():
    while True:
        conn, peer = tcp.accept()
        log.write(f"tcp {peer[0]}\n"); conn.close()
threading.Thread(target=tcp_loop, daemon=True).start()
while True:
    data, peer = udp.recvfrom(2048)
    log.write(f"udp {peer[0]} {data[:40]!r}\n")
""".replace("TCP_PORT", str(TCP_PORT)).replace("UDP_PORT", str(UDP_PORT))

_OWN_ADDRESS = r"""
import socket
bridge = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((bridge, 53))
print(s.getsockname()[0], bridge)
"""

# try(host, port, proto): "connected"/"sent" or the error; each attempt bounded by 1 s
_PROBE = r"""
import json, socket, sys
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return "connected"
    except OSError as exc:
        return type(exc).__name__
def udp_answered(host, port, payload, source=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    if source:
        s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: bind an address that is not ours
        s.bind((source, 0))
    try:
        s.sendto(payload, (host, port))
        s.recvfrom(2048)
        return "answered"
    except OSError as exc:
        return type(exc).__name__
"""


def _query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + labels + b"\x00\x00\x01\x00\x01"


DNS_QUERY = _query("bridge.answered.corral-dns.test")  # the fake upstream answers at once


@dataclass
class HostListener:
    """TCP and UDP listeners on one host address, counting what arrives."""

    address: str
    tcp_port: int = 0
    udp_port: int = 0
    heard: list[str] = field(default_factory=list)

    def start(self) -> HostListener:
        tcp = socket.socket()
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((self.address, 0))
        tcp.listen(16)
        tcp.settimeout(0.5)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((self.address, 0))
        udp.settimeout(0.5)
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        self._socks = (tcp, udp)
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def _loop(self) -> None:
        tcp, udp = self._socks
        while not self._stop.is_set():
            for sock in (tcp, udp):
                try:
                    if sock is tcp:
                        conn, peer = tcp.accept()
                        conn.close()
                        self.heard.append(f"tcp {peer[0]}")
                    else:
                        _, peer = udp.recvfrom(2048)
                        self.heard.append(f"udp {peer[0]}")
                except (TimeoutError, OSError):
                    continue

    def close(self) -> None:
        self._stop.set()
        for sock in self._socks:
            sock.close()


@dataclass
class Net:
    bridge: str
    attacker: str
    bystander: str
    neighbour: str  # another sandbox of the attacker's own org
    pool: ipaddress.IPv4Network


def _address(tenant: Tenant, sandbox_id: str) -> tuple[str, str]:
    own, bridge = tenant.python(sandbox_id, _OWN_ADDRESS)["stdout"].split()
    return own, bridge


@pytest.fixture(scope="module")
def net(
    alpha: Tenant, beta: Tenant, attacker_box: str, bystander_box: str, security_server: SecurityServer
) -> Iterator[Net]:
    attacker, bridge = _address(alpha, attacker_box)
    bystander, _ = _address(beta, bystander_box)
    neighbour_box = str(alpha.create(timeout=300)["sandboxID"])
    neighbour, _ = _address(alpha, neighbour_box)
    pool = ipaddress.IPv4Network(security_server.env["CORRAL_NETWORK_POOL"])
    assert ipaddress.ip_address(bridge) in pool and ipaddress.ip_address(bystander) in pool
    with beta.http() as http:
        listener = http.post(
            f"/sandboxes/{bystander_box}/exec", json={"cmd": "python3", "args": ["-c", _LISTENER]}
        )
        assert listener.status_code == 201, listener.text
    with alpha.http() as http:
        neighbour_listener = http.post(
            f"/sandboxes/{neighbour_box}/exec", json={"cmd": "python3", "args": ["-c", _LISTENER]}
        )
        assert neighbour_listener.status_code == 201, neighbour_listener.text
    # the controls: each sandbox reaches its own listener once it listens (so the path
    # carries traffic)
    for tenant, box, own in ((beta, bystander_box, bystander), (alpha, neighbour_box, neighbour)):
        probe = _PROBE + f"print(tcp({own!r}, {TCP_PORT}))"
        eventually(
            lambda t=tenant, b=box, p=probe: t.python(b, p)["stdout"].strip() == "connected",
            10,
            f"{box} never reached its own listener",
            0.1,
        )
    yield Net(bridge, attacker, bystander, neighbour, pool)
    with beta.http() as http:
        http.post(f"/sandboxes/{bystander_box}/exec/{listener.json()['sessionID']}/kill", json={"signal": 9})
    alpha.kill(neighbour_box)


def _heard(tenant: Tenant, sandbox_id: str, source: str) -> list[str]:
    lines = tenant.run(sandbox_id, "cat /tmp/heard 2>/dev/null")["stdout"].splitlines()
    return [line for line in lines if source in line]


@pytest.fixture
def bridge_listener(net: Net) -> Iterator[HostListener]:
    listener = HostListener(net.bridge).start()
    yield listener
    listener.close()


@pytest.fixture
def loopback_listener() -> Iterator[HostListener]:
    listener = HostListener("127.0.0.1").start()
    yield listener
    listener.close()


def test_host_service_on_the_bridge_address_is_unreachable(
    alpha: Tenant, attacker_box: str, net: Net, bridge_listener: HostListener, unnoticed: Callable[[], None]
) -> None:
    """A service the host runs on the bridge address (the sandboxes' gateway): TCP and
    UDP never arrive, while the resolver on the same address answers (the control)."""
    code = _PROBE + (
        f"print(json.dumps([tcp({net.bridge!r}, {bridge_listener.tcp_port}), "
        f"udp_answered({net.bridge!r}, {bridge_listener.udp_port}, b'hello'), "
        f"udp_answered({net.bridge!r}, 53, {DNS_QUERY!r})]))"
    )
    result = alpha.python(attacker_box, code)
    tcp, udp, dns = json.loads(result["stdout"])
    assert tcp != "connected" and udp != "answered", result
    assert dns == "answered", result  # the resolver: the one port open on the bridge
    time.sleep(0.3)
    assert bridge_listener.heard == []
    unnoticed()


@pytest.mark.parametrize("port", [22, 80, 443, 2375, 6443, 8080, 10250])
def test_host_ports_on_the_bridge_address_are_closed(
    port: int, alpha: Tenant, attacker_box: str, net: Net, security_server: SecurityServer
) -> None:
    """Well-known control ports (ssh, http, docker, kubernetes, the kubelet), and the
    server's own port, on the bridge address."""
    server_port = int(security_server.url.rsplit(":", 1)[1])
    code = _PROBE + f"print(tcp({net.bridge!r}, {port}), tcp({net.bridge!r}, {server_port}))"
    result = alpha.python(attacker_box, code)
    assert "connected" not in result["stdout"], result


def test_hosts_loopback_is_not_the_sandboxs(
    alpha: Tenant, attacker_box: str, loopback_listener: HostListener, security_server: SecurityServer
) -> None:
    """127.0.0.1 in a sandbox is its own loopback: neither a listener on the host's
    loopback nor the server (which listens on 127.0.0.1) is there."""
    server_port = int(security_server.url.rsplit(":", 1)[1])
    code = _PROBE + (
        f"print(json.dumps([tcp('127.0.0.1', {loopback_listener.tcp_port}), tcp('127.0.0.1', {server_port}), "
        f"udp_answered('127.0.0.1', {loopback_listener.udp_port}, b'hello')]))"
    )
    result = alpha.python(attacker_box, code)
    assert "connected" not in result["stdout"] and "answered" not in result["stdout"], result
    time.sleep(0.3)
    assert loopback_listener.heard == []


@pytest.mark.parametrize("target", ["bystander", "neighbour"])
def test_another_sandbox_is_unreachable(
    target: str,
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    bystander_box: str,
    net: Net,
    unnoticed: Callable[[], None],
) -> None:
    """TCP and UDP to another org's sandbox, and to a sandbox of the attacker's own org:
    nothing arrives (bridge ports are isolated, nothing is forwarded back)."""
    address = net.bystander if target == "bystander" else net.neighbour
    code = _PROBE + (
        f"print(json.dumps([tcp({address!r}, {TCP_PORT}), udp_answered({address!r}, {UDP_PORT}, b'attack')]))"
    )
    result = alpha.python(attacker_box, code)
    tcp, _ = json.loads(result["stdout"])
    assert tcp != "connected", result
    if target == "bystander":
        time.sleep(0.3)
        assert _heard(beta, bystander_box, net.attacker) == []
    unnoticed()


def test_broadcast_reaches_no_sandbox(
    alpha: Tenant, beta: Tenant, attacker_box: str, bystander_box: str, net: Net
) -> None:
    broadcast = str(net.pool.broadcast_address)
    code = (
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
        f"for host in ({broadcast!r}, '255.255.255.255'):\n"
        "    try:\n"
        f"        s.sendto(b'broadcast', (host, {UDP_PORT}))\n"
        "    except OSError as exc:\n"
        "        print(exc)\n"
    )
    alpha.python(attacker_box, code)
    time.sleep(0.5)
    assert [line for line in _heard(beta, bystander_box, "") if "broadcast" in line] == []


def test_link_local_metadata_is_unreachable(alpha: Tenant, attacker_box: str) -> None:
    code = _PROBE + "print(tcp('169.254.169.254', 80), udp_answered('169.254.169.254', 53, b'x'))"
    started = time.monotonic()
    result = alpha.python(attacker_box, code)
    assert "connected" not in result["stdout"] and "answered" not in result["stdout"], result
    assert time.monotonic() - started < 15


def test_ipv6_reaches_nothing_outside(alpha: Tenant, attacker_box: str, net: Net) -> None:
    """IPv6 is off on eth0 and dropped at the bridge: link-local all-routers and
    all-nodes, and IPv4-mapped addresses of the bridge."""
    code = r"""
import socket
out = []
for host in ("ff02::1%eth0", "ff02::2%eth0", "fe80::1%eth0", "::ffff:BRIDGE"):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM if not host.startswith("ff") else socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        if host.startswith("ff"):
            s.sendto(b"x", (host, 9999))
            out.append("sent")
        else:
            s.connect((host, 22))
            out.append("connected")
    except OSError as exc:
        out.append(type(exc).__name__)
print(out)
""".replace("BRIDGE", net.bridge)
    result = alpha.python(attacker_box, code)
    assert "connected" not in result["stdout"] and "sent" not in result["stdout"], result


def test_spoofed_source_address_gets_nothing_through(
    alpha: Tenant,
    beta: Tenant,
    attacker_box: str,
    bystander_box: str,
    net: Net,
    dns_upstream: DnsUpstream,
    unnoticed: Callable[[], None],
) -> None:
    """A packet sent with another sandbox's address (IP_FREEBIND needs no capability)
    is dropped at the bridge. Seen from the upstream: the resolver relays the attacker's
    own query for a name of the fake upstream's ``ANSWERED`` zone, and never the same
    query sent with the bystander's or the neighbour's address."""
    zone = "answered.corral-dns.test"
    own = _PROBE + f"print(udp_answered({net.bridge!r}, 53, {_query('own.' + zone)!r}))"
    before = dns_upstream.answered
    assert alpha.python(attacker_box, own)["stdout"].strip() == "answered"
    assert dns_upstream.answered == before + 1  # the control: one query, relayed once
    spoofed = _PROBE + (
        f"print(udp_answered({net.bridge!r}, 53, {_query('spoof1.' + zone)!r}, source={net.bystander!r}), "
        f"udp_answered({net.bridge!r}, 53, {_query('spoof2.' + zone)!r}, source={net.neighbour!r}), "
        f"udp_answered({net.bystander!r}, {UDP_PORT}, b'spoofed', source={net.neighbour!r}))"
    )
    result = alpha.python(attacker_box, spoofed)
    assert "answered" not in result["stdout"], result
    time.sleep(0.5)
    assert dns_upstream.answered == before + 1, "a spoofed query reached the resolver"
    assert [line for line in _heard(beta, bystander_box, "") if "spoofed" in line] == []
    unnoticed()


def test_arp_and_address_changes_need_capabilities_it_lacks(alpha: Tenant, attacker_box: str) -> None:
    """ARP spoofing needs a packet socket (no NET_RAW); taking another address needs
    NET_ADMIN: both refused (the address asked for is a documentation one, never set)."""
    code = r"""
import fcntl, socket, struct
out = []
try:
    socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    out.append("packet socket")
except OSError as exc:
    out.append(exc.errno)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
req = struct.pack("16sH2s4s8s", b"eth0", socket.AF_INET, b"\0\0", socket.inet_aton("192.0.2.1"), b"\0" * 8)
try:
    fcntl.ioctl(s, 0x8916, req)  # SIOCSIFADDR
    out.append("address set")
except OSError as exc:
    out.append(exc.errno)
print(out)
"""
    result = alpha.python(attacker_box, code)
    assert result["stdout"].strip() == "[1, 1]", result  # EPERM twice


def test_dns_rebinding_to_a_non_global_address_opens_nothing(
    alpha: Tenant, security_server: SecurityServer, dns_upstream: DnsUpstream, unnoticed: Callable[[], None]
) -> None:
    """Under deny_all with one allowed name, the name's answer is a non-global address
    (the fake upstream answers 192.0.2.53, a documentation address, as a rebinding
    server would answer an internal one): the resolver relays it, but pins it nowhere in
    the firewall, so it opens nothing. Checked in the host's nftables, so no packet is
    sent to that address."""
    sandbox = str(alpha.create(timeout=300)["sandboxID"])
    try:
        with alpha.http() as http:
            policy = http.put(
                f"/sandboxes/{sandbox}/network",
                json={"mode": "deny_all", "allow": ["rebind.answered.corral-dns.test"]},
            )
            assert policy.status_code == 200, policy.text
        before = dns_upstream.answered
        code = (
            "import socket\n"
            "try:\n"
            "    print(socket.gethostbyname('rebind.answered.corral-dns.test'))\n"
            "except OSError as exc:\n"
            "    print('refused', exc)\n"
        )
        result = alpha.python(sandbox, code)
        assert dns_upstream.answered > before, result  # the name was allowed and asked upstream
        table = subprocess.run(
            ["nft", "list", "table", "inet", security_server.env["CORRAL_NETWORK_BRIDGE"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "192.0.2.53" not in table, "a non-global answer was pinned open"
        unnoticed()
    finally:
        alpha.kill(sandbox)
