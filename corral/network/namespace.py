"""A sandbox's network namespace and its veth pair.

Names: the namespace is ``<prefix><sandbox id>`` (``/run/netns/corral-sb-...``; runc
joins it through the OCI config's network namespace ``path``); the host end of the
veth is ``vc`` + 12 hex digits of a hash of the id (interface names are at most 15
characters); the sandbox end is ``eth0``, created directly inside the namespace so
that concurrent attaches never clash on a name in the host. A namespace made ahead
(``spares.py``) has the pool's names instead, and its host end's alias (:func:`label`)
names the sandbox that claimed it.

Inside, the sandbox gets its address as a /32 with an on-link default route via the
bridge's address: every packet, even one to another sandbox's address, goes through
the host's routing and firewall (which drops sandbox-to-sandbox traffic), and the
bridge port is isolated, so there is no layer-2 path between sandboxes either.
``lo`` is up. IPv6 is switched off on ``eth0`` (``::1`` on ``lo`` stays) and ICMP echo
sockets are allowed to every group (``ping`` without CAP_NET_RAW; the namespace is
the sandbox's alone). The namespace is owned by the host's user namespace, so root in
the sandbox cannot reconfigure any of this.

Contract: :func:`create` is one ``ip -batch`` call (the namespace, the veth pair, the
bridge port), then sysctl writes and four rtnetlink requests (``lo`` and ``eth0`` up,
the address, the default route) from a short-lived thread that joined the namespace;
on failure the caller removes what was
made with :func:`remove`, which is idempotent and verifies that nothing is left.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import hashlib
import ipaddress
import json
import os
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

from corral.errors import RuntimeFailure
from corral.network import command

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")
CLONE_NEWNET = 0x40000000
_GONE = ("Cannot find device", "No such file or directory", "does not exist")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def veth_name(sandbox_id: str) -> str:
    return "vc" + hashlib.sha256(sandbox_id.encode()).hexdigest()[:12]


def netns_path(name: str) -> str:
    return str(NETNS_DIR / name)


async def create(
    netns: str,
    veth: str,
    bridge: str,
    address: str,
    gateway: ipaddress.IPv4Address,
) -> None:
    """Make the namespace and the veth pair, plug the host end into the bridge as an
    isolated port, and configure the inside. RuntimeFailure on any failure (partial
    work is left for :func:`remove`)."""
    await command.run(
        ["ip", "-batch", "-"],
        stdin=(
            f"netns add {netns}\n"
            f"link add {veth} type veth peer name eth0 netns {netns}\n"
            f"link set {veth} master {bridge}\n"
            f"link set dev {veth} type bridge_slave isolated on\n"
            f"link set {veth} up\n"
        ),
    )
    await _inside(
        netns_path(netns),
        {"net/ipv6/conf/eth0/disable_ipv6": "1", "net/ipv4/ping_group_range": "0 2147483647"},
        configure=lambda: _configure_inside(ipaddress.IPv4Address(address), gateway),
    )


async def remove(netns: str, veth: str) -> None:
    """Delete the veth pair and the namespace; idempotent. RuntimeFailure if either
    is still there afterwards."""
    done = await command.run(
        ["ip", "-force", "-batch", "-"], stdin=f"link del {veth}\nnetns del {netns}\n", check=False
    )
    left = await asyncio.to_thread(_leftovers, netns, veth)
    if left:
        raise RuntimeFailure(f"cannot remove {', '.join(left)}: {done.describe()}")
    noise = [line for line in done.stderr.splitlines() if line and not line.startswith("Command failed")]
    unexpected = [line for line in noise if not any(g in line for g in _GONE)]
    if unexpected:
        raise RuntimeFailure(f"removing {netns}: {'; '.join(unexpected)}")


async def remove_link(name: str) -> None:
    """Delete one host interface (a leaked veth end); idempotent."""
    done = await command.run(["ip", "link", "del", name], check=False)
    if not done.ok and not any(g in done.stderr for g in _GONE):
        raise RuntimeFailure(done.describe())


def _leftovers(netns: str, veth: str) -> list[str]:
    left = []
    if (NETNS_DIR / netns).exists():
        left.append(f"network namespace {netns}")
    if (SYS_NET / veth).exists():
        left.append(f"interface {veth}")
    return left


async def names(prefix: str) -> set[str]:
    """Names of the named network namespaces that start with ``prefix``."""

    def scan() -> set[str]:
        try:
            return {p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)}
        except FileNotFoundError:
            return set()

    return await asyncio.to_thread(scan)


async def address_of(netns: str) -> str | None:
    """The IPv4 address of ``eth0`` inside the namespace (recovery when the ledger
    and the firewall have both lost it), None if there is none."""
    done = await command.run(["ip", "-j", "-n", netns, "-4", "addr", "show", "dev", "eth0"], check=False)
    try:
        for link in json.loads(done.stdout) if done.ok else []:
            for entry in link.get("addr_info", []):
                if entry.get("family") == "inet" and isinstance(entry.get("local"), str):
                    return str(entry["local"])
    except (ValueError, AttributeError, TypeError):
        pass
    return None


def exists(netns: str) -> bool:
    return (NETNS_DIR / netns).exists()


def link_exists(name: str) -> bool:
    return (SYS_NET / name).exists()


def label(veth: str, sandbox_id: str) -> None:
    """Write ``sandbox_id`` as the host end's interface alias (blocking, one sysfs
    write): what names the owner of a pooled namespace when the ledger is lost.
    RuntimeFailure if the interface is gone."""
    try:
        (SYS_NET / veth / "ifalias").write_text(sandbox_id)
    except OSError as exc:
        raise RuntimeFailure(f"cannot label {veth}: {exc}") from exc


def label_of(veth: str) -> str | None:
    """The alias :func:`label` wrote (blocking), None when there is none or no such
    interface."""
    try:
        text = (SYS_NET / veth / "ifalias").read_text().strip()
    except OSError:
        return None
    return text or None


async def _inside(path: str, sysctls: dict[str, str], configure: Callable[[], None] | None = None) -> None:
    """Write ``sysctls`` (paths under /proc/sys) inside the namespace at ``path``, then
    run ``configure`` there (``_configure_inside``).

    A dedicated thread joins the namespace and ends afterwards: a thread's network
    namespace is its own, and a thread that ends cannot leak it into a pool."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

    def work() -> None:
        error: BaseException | None = None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns: {os.strerror(code)}")
            finally:
                os.close(fd)
            for key, value in sysctls.items():
                try:
                    with open(f"/proc/sys/{key}", "w") as handle:
                        handle.write(value)
                except FileNotFoundError:
                    if "ipv6" not in key:  # a kernel without IPv6 has nothing to switch off
                        raise
            if configure is not None:
                configure()
        except OSError as exc:
            error = RuntimeFailure(f"configuring {path}: {exc}")
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            error = exc
        loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=work, name="corral-netns", daemon=True).start()
    await done


# rtnetlink, as ``ip`` speaks it (linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h)
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
IFF_UP = 0x1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, RTNH_F_ONLINK = 254, 3, 0, 1, 4


def _configure_inside(address: ipaddress.IPv4Address, gateway: ipaddress.IPv4Address) -> None:
    """What ``ip -n <netns> -batch`` did with ``link set lo up``, ``addr add
    <address>/32 dev eth0``, ``link set eth0 up`` and ``route add default via <gateway>
    dev eth0 onlink``, as four rtnetlink requests from the calling thread, which is in the
    namespace (a netlink socket belongs to the namespace of the thread that opens it):
    no ``ip`` process per sandbox. Blocking; OSError with the kernel's errno."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE) as nl:
        nl.bind((0, 0))
        eth0 = socket.if_nametoindex("eth0")
        lo = socket.if_nametoindex("lo")
        create = NLM_F_CREATE | NLM_F_EXCL
        up = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, lo, IFF_UP, IFF_UP)
        _request(nl, 1, RTM_NEWLINK, 0, up)
        addr = struct.pack("=BBBBI", socket.AF_INET, 32, 0, RT_SCOPE_UNIVERSE, eth0)
        addr += _attr(IFA_LOCAL, address.packed) + _attr(IFA_ADDRESS, address.packed)
        _request(nl, 2, RTM_NEWADDR, create, addr)
        up = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, eth0, IFF_UP, IFF_UP)
        _request(nl, 3, RTM_NEWLINK, 0, up)
        route = struct.pack(
            "=BBBBBBBBI",
            socket.AF_INET,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            RT_SCOPE_UNIVERSE,
            RTN_UNICAST,
            RTNH_F_ONLINK,
        )
        route += _attr(RTA_GATEWAY, gateway.packed) + _attr(RTA_OIF, struct.pack("=I", eth0))
        _request(nl, 4, RTM_NEWROUTE, create, route)


def _attr(kind: int, data: bytes) -> bytes:
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def _request(nl: socket.socket, seq: int, kind: int, flags: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; OSError for an error answer."""
    nl.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
    while True:
        data = nl.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, answer, _flags, answered, _pid = struct.unpack_from("=IHHII", data, offset)
            if answer == NLMSG_ERROR and answered == seq:
                error = -struct.unpack_from("=i", data, offset + 16)[0]
                if error:
                    raise OSError(error, f"rtnetlink request {kind}: {os.strerror(error)}")
                return
            offset += max(16, (length + 3) & ~3)
