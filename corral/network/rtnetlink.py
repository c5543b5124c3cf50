"""rtnetlink requests, as ``ip`` sends them, from the calling thread: no ``ip`` process.

A NETLINK_ROUTE socket belongs to the network namespace its opening thread was in
when it opened it, whatever the thread does afterwards; so a thread that opens one,
then unshares its network namespace, holds a socket that still configures the host.
Each request asks for an acknowledgement and waits for it before the next one is sent
(one request per send: the kernel carries on with the next request of a batch even when
one fails). Errors are OSError with the kernel's errno.

Constants are those of linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
linux/if_addr.h and linux/veth.h.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct

# linux/netlink.h
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
# linux/rtnetlink.h
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 20, 24
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST, RTNH_F_ONLINK = 254, 3, 0, 1, 4
RTA_OIF, RTA_GATEWAY = 4, 5
# linux/if_addr.h
IFA_ADDRESS, IFA_LOCAL = 1, 2
# linux/if.h
IFF_UP = 0x1
# linux/if_link.h
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_DATA = 1, 2, 5
IFLA_BRPORT_ISOLATED = 33
# linux/veth.h
VETH_INFO_PEER = 1

_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr
_IFINFO = struct.Struct("=BxHiII")  # struct ifinfomsg: family, type, index, flags, change


def open_route() -> socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's network namespace."""
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    try:
        nl.bind((0, 0))
    except BaseException:
        nl.close()
        raise
    return nl


def attr(kind: int, data: bytes) -> bytes:
    """One attribute (struct rtattr), padded to 4 bytes."""
    size = 4 + len(data)
    return struct.pack("=HH", size, kind) + data + b"\0" * (-size % 4)


def _name(name: str) -> bytes:
    return attr(IFLA_IFNAME, name.encode() + b"\0")


def _ifinfo(index: int = 0, flags: int = 0, change: int = 0) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def request(nl: socket.socket, seq: int, kind: int, flags: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; OSError for an error answer."""
    nl.send(_HEADER.pack(16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
    while True:
        data = nl.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, answer, _flags, answered, _pid = _HEADER.unpack_from(data, offset)
            if answer == NLMSG_ERROR and answered == seq:
                error = -struct.unpack_from("=i", data, offset + 16)[0]
                if error:
                    raise OSError(error, f"rtnetlink request {kind}: {os.strerror(error)}")
                return
            offset += max(16, (length + 3) & ~3)


def add_veth(nl: socket.socket, seq: int, name: str, peer: str, peer_netns_fd: int) -> None:
    """``ip link add <name> type veth peer name <peer> netns <fd>``: the pair, ``name`` in
    the socket's namespace, ``peer`` made directly in the namespace of ``peer_netns_fd``
    (its name never exists in the socket's namespace). Both ends are down."""
    peer_info = _ifinfo() + attr(IFLA_NET_NS_FD, struct.pack("=I", peer_netns_fd)) + _name(peer)
    info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
    body = _ifinfo() + _name(name) + attr(IFLA_LINKINFO, info)
    request(nl, seq, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)


def set_master(nl: socket.socket, seq: int, name: str, master: int) -> None:
    """``ip link set <name> master <bridge>``, the bridge given by its ifindex."""
    request(nl, seq, RTM_NEWLINK, 0, _ifinfo() + _name(name) + attr(IFLA_MASTER, struct.pack("=I", master)))


def isolate_port(nl: socket.socket, seq: int, name: str) -> None:
    """``ip link set dev <name> type bridge_slave isolated on``: the bridge port option
    (IFLA_BRPORT_ISOLATED in the link's slave data, which the kernel hands to the port's
    bridge). ``name`` must already be a bridge port."""
    data = attr(IFLA_INFO_SLAVE_DATA, attr(IFLA_BRPORT_ISOLATED, b"\x01"))
    request(nl, seq, RTM_NEWLINK, 0, _ifinfo() + _name(name) + attr(IFLA_LINKINFO, data))


def set_up(nl: socket.socket, seq: int, name: str = "", index: int = 0) -> None:
    """``ip link set <name> up``; the link given by ``name`` or by ``index``."""
    body = _ifinfo(index, IFF_UP, IFF_UP) + (_name(name) if name else b"")
    request(nl, seq, RTM_NEWLINK, 0, body)


def delete_link(nl: socket.socket, seq: int, name: str) -> None:
    """``ip link del <name>`` (a veth's peer goes with it); OSError ENODEV when there is
    no such link."""
    request(nl, seq, RTM_DELLINK, 0, _ifinfo() + _name(name))


def add_address32(nl: socket.socket, seq: int, index: int, address: ipaddress.IPv4Address) -> None:
    """``ip addr add <address>/32 dev <index>``."""
    body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, RT_SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, address.packed) + attr(IFA_ADDRESS, address.packed)
    request(nl, seq, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def add_default_onlink(nl: socket.socket, seq: int, index: int, gateway: ipaddress.IPv4Address) -> None:
    """``ip route add default via <gateway> dev <index> onlink``."""
    body = struct.pack(
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
    body += attr(RTA_GATEWAY, gateway.packed) + attr(RTA_OIF, struct.pack("=I", index))
    request(nl, seq, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)
