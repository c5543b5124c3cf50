"""rtnetlink.py's requests, byte for byte, against a socket that records what is sent
and answers as the kernel does (the real kernel's answers are in
tests/integration/network/test_namespace.py)."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any, cast

import pytest

from corral.network import rtnetlink


class Recorder:
    """Takes requests; answers each with an acknowledgement carrying ``error`` (0: none),
    after a message that is not the answer (a reply to something else)."""

    def __init__(self, error: int = 0) -> None:
        self.sent: list[bytes] = []
        self.error = error
        self.answers: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        seq = struct.unpack_from("=I", data, 8)[0]
        other = struct.pack("=IHHII", 20, rtnetlink.NLMSG_ERROR, 0, seq + 100, 0) + struct.pack("=i", -1)
        ack = struct.pack("=IHHII", 36, rtnetlink.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", -self.error)
        self.answers += [other, ack + data[:16]]
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.answers.pop(0)


def sock(recorder: Recorder) -> socket.socket:
    return cast(socket.socket, recorder)


def header(data: bytes) -> tuple[Any, ...]:
    return struct.unpack_from("=IHHII", data)


def test_add_veth_is_the_message_ip_link_add_sends() -> None:
    # `ip link add crlzv0 type veth peer name eth0 netns <fd 5>` as iproute2 6.1 sent it.
    expected = bytes.fromhex(
        "64000000" "1000" "0506" "07000000" "00000000"  # nlmsghdr: 100, RTM_NEWLINK, REQUEST|ACK|EXCL|CREATE
        "00000000" "00000000" "00000000" "00000000"  # ifinfomsg
        "0b000300" "63726c7a763000" "00"  # IFLA_IFNAME "crlzv0"
        "38001200"  # IFLA_LINKINFO
        "08000100" "76657468"  # IFLA_INFO_KIND "veth"
        "2c000200"  # IFLA_INFO_DATA
        "28000100" + "00" * 16  # VETH_INFO_PEER: its ifinfomsg
        + "08001c00" "05000000"  # IFLA_NET_NS_FD 5
        "09000300" "6574683000" "000000"  # IFLA_IFNAME "eth0"
    )  # fmt: skip
    recorder = Recorder()
    rtnetlink.add_veth(sock(recorder), 7, "crlzv0", "eth0", 5)
    assert recorder.sent == [expected]


def test_port_requests_name_the_link_and_carry_one_setting_each() -> None:
    recorder = Recorder()
    rtnetlink.set_master(sock(recorder), 1, "vc1", 42)
    rtnetlink.isolate_port(sock(recorder), 2, "vc1")
    rtnetlink.set_up(sock(recorder), 3, "vc1")
    name = rtnetlink.attr(rtnetlink.IFLA_IFNAME, b"vc1\0")
    unspec = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
    master, isolated, up = recorder.sent
    assert header(master)[1:4] == (rtnetlink.RTM_NEWLINK, rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_ACK, 1)
    assert master[16:] == unspec + name + bytes.fromhex("08000a002a000000")  # IFLA_MASTER 42
    # IFLA_LINKINFO { IFLA_INFO_SLAVE_DATA { IFLA_BRPORT_ISOLATED u8 1 } }, as `ip link set
    # dev X type bridge_slave isolated on` sends its slave data
    assert isolated[16:] == unspec + name + bytes.fromhex("100012000c0005000500210001000000")
    assert (
        up[16:] == struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, rtnetlink.IFF_UP, rtnetlink.IFF_UP) + name
    )
    assert header(up)[0] == len(up)


def test_inside_requests() -> None:
    recorder = Recorder()
    rtnetlink.add_address32(sock(recorder), 1, 2, ipaddress.IPv4Address("10.0.0.5"))
    rtnetlink.add_default_onlink(sock(recorder), 2, 2, ipaddress.IPv4Address("10.0.0.1"))
    rtnetlink.delete_link(sock(recorder), 3, "vc1")
    address, route, delete = recorder.sent
    create = rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_ACK | rtnetlink.NLM_F_CREATE | rtnetlink.NLM_F_EXCL
    assert header(address)[1:3] == (rtnetlink.RTM_NEWADDR, create)
    assert address[16:24] == bytes([socket.AF_INET, 32, 0, 0, 2, 0, 0, 0])
    assert address[24:] == bytes.fromhex("080002000a000005080001000a000005")
    assert header(route)[1:3] == (rtnetlink.RTM_NEWROUTE, create)
    assert route[16:28] == bytes([socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 4, 0, 0, 0])  # main, boot, onlink
    assert route[28:] == bytes.fromhex("080005000a0000010800040002000000")
    assert header(delete)[1:3] == (rtnetlink.RTM_DELLINK, rtnetlink.NLM_F_REQUEST | rtnetlink.NLM_F_ACK)


def test_an_error_answer_is_an_oserror_with_the_kernels_errno() -> None:
    with pytest.raises(OSError) as raised:
        rtnetlink.set_up(sock(Recorder(errno.ENODEV)), 9, "gone")
    assert raised.value.errno == errno.ENODEV


def test_attributes_are_padded_to_four_bytes() -> None:
    assert rtnetlink.attr(3, b"a") == bytes.fromhex("0500030061000000")
    assert rtnetlink.attr(3, b"abcd") == bytes.fromhex("0800030061626364")
