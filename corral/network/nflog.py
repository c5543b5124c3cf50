"""A reader of one NFLOG group: the packets nftables logs with ``log group N``.

Plain stdlib: an ``AF_NETLINK``/``NETLINK_NETFILTER`` socket bound to the group with
the nfnetlink_log protocol (``NFULNL_MSG_CONFIG``: bind the group, copy the first 128
bytes of each packet), read without blocking from the event loop. Each logged packet
becomes a :class:`Logged` (prefix, IPv4 source, destination, protocol, destination
port); anything else on the socket is skipped.

Why NFLOG rather than ``log prefix`` lines in ``/dev/kmsg``: the packets reach only
us (not the kernel log, where a flood would drown everything else and be rate
limited by printk), they arrive as binary headers instead of text to re-parse, and
the group is exclusive (binding fails with EPERM if another process holds it, which
is reported, so two corral processes cannot silently split the events).

Contract: :meth:`NflogSocket.open` raises OSError when the group cannot be bound
(no nfnetlink_log, not root, group taken). Lost packets (ENOBUFS when we read too
slowly) are counted in :attr:`NflogSocket.lost`, never raised.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
_NFNL_SUBSYS_ULOG = 4
_MSG_PACKET = (_NFNL_SUBSYS_ULOG << 8) | 0
_MSG_CONFIG = (_NFNL_SUBSYS_ULOG << 8) | 1
_NLMSG_ERROR = 2
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_CFG_CMD, _CFG_MODE, _CFG_QTHRESH = 1, 2, 5
_CMD_BIND, _CMD_UNBIND = 1, 2
_COPY_PACKET = 2
_ATTR_PAYLOAD, _ATTR_PREFIX = 9, 10
_NLA_TYPE_MASK = 0x3FFF

_NLMSGHDR = struct.Struct("=IHHII")
_NLATTR = struct.Struct("=HH")
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 132: "sctp"}


@dataclass(frozen=True)
class Logged:
    prefix: str
    src: str
    dst: str
    proto: str
    port: int | None


def _attr(kind: int, payload: bytes) -> bytes:
    body = _NLATTR.pack(_NLATTR.size + len(payload), kind) + payload
    return body + b"\x00" * (-len(body) % 4)


def _config(group: int, seq: int, attr: bytes) -> bytes:
    nfgen = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", group)
    body = nfgen + attr
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), _MSG_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK, seq, 0) + body


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            break
        found[kind & _NLA_TYPE_MASK] = data[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def parse_ipv4(prefix: str, packet: bytes) -> Logged | None:
    """The addresses, protocol and destination port of an IPv4 packet's headers."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    proto_number = packet[9]
    src = str(ipaddress.IPv4Address(packet[12:16]))
    dst = str(ipaddress.IPv4Address(packet[16:20]))
    port = None
    if proto_number in (6, 17, 132) and len(packet) >= ihl + 4:
        port = struct.unpack_from("!H", packet, ihl + 2)[0]
    return Logged(prefix, src, dst, PROTOCOLS.get(proto_number, str(proto_number)), port)


def parse(data: bytes) -> list[Logged]:
    """Every logged IPv4 packet in one datagram read from the socket."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        if kind == _MSG_PACKET and length >= _NLMSGHDR.size + 4:
            attrs = _attrs(data, offset + _NLMSGHDR.size + 4, offset + length)
            prefix = attrs.get(_ATTR_PREFIX, b"").split(b"\x00", 1)[0].decode("ascii", "replace")
            logged = parse_ipv4(prefix, attrs.get(_ATTR_PAYLOAD, b""))
            if logged is not None:
                out.append(logged)
        offset += (length + 3) & ~3
    return out


class NflogSocket:
    """One bound NFLOG group. Use :meth:`open`, then :meth:`read` whenever the fd is
    readable, then :meth:`close`."""

    def __init__(self, group: int) -> None:
        if not 0 <= group <= 0xFFFF:
            raise ValueError(f"NFLOG group {group} is out of range")
        self.group = group
        self.lost = 0
        self._sock: socket.socket | None = None

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    def open(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((0, 0))
            sock.settimeout(2.0)
            self._request(sock, 1, _attr(_CFG_CMD, bytes([_CMD_BIND])))
            self._request(sock, 2, _attr(_CFG_MODE, struct.pack("!IBB", 128, _COPY_PACKET, 0)))
            # deliver each packet at once (the default batches 100 packets or 1 s)
            self._request(sock, 3, _attr(_CFG_QTHRESH, struct.pack("!I", 1)))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock

    def _request(self, sock: socket.socket, seq: int, attr: bytes) -> None:
        sock.send(_config(self.group, seq, attr))
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, kind, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                if length < _NLMSGHDR.size:
                    break
                if kind == _NLMSG_ERROR and got_seq == seq:
                    (code,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
                    if code:
                        raise OSError(-code, f"NFLOG group {self.group}: {errno.errorcode.get(-code, code)}")
                    return
                offset += (length + 3) & ~3

    def read(self, limit: int = 64) -> list[Logged]:
        """Drain up to ``limit`` datagrams without blocking."""
        out: list[Logged] = []
        if self._sock is None:
            return out
        for _ in range(limit):
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            out.extend(parse(data))
        return out

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.setblocking(True)
            sock.settimeout(0.5)
            self._request(sock, 4, _attr(_CFG_CMD, bytes([_CMD_UNBIND])))
        except OSError:
            pass
        finally:
            sock.close()
