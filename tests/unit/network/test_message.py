"""DNS message parsing: strict, bounded, and hard to fool."""

from __future__ import annotations

import struct

import pytest

from corral.network import message
from corral.network.message import MalformedMessage


def encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def answer(query: bytes, *records: bytes, rcode: int = 0) -> bytes:
    header = struct.pack("!HHHHHH", struct.unpack_from("!H", query)[0], 0x8180 | rcode, 1, len(records), 0, 0)
    return header + query[12:] + b"".join(records)


def a_record(owner: bytes, address: bytes, ttl: int = 300) -> bytes:
    return owner + struct.pack("!HHIH", 1, 1, ttl, 4) + address


def test_query_round_trip() -> None:
    query = message.build_query(0xBEEF, "Api.Example.COM")
    q = message.parse_query(query)
    assert (q.id, q.name, q.qtype, q.qclass) == (0xBEEF, "api.example.com", message.A, 1)
    reply = message.reply(query, q, message.NXDOMAIN)
    parsed = message.parse_answer(reply)
    assert parsed.rcode == message.NXDOMAIN and parsed.records == () and parsed.question.name == q.name
    assert message.with_id(reply, 7)[:2] == b"\x00\x07"


def test_answers_with_compression_and_cname() -> None:
    query = message.build_query(1, "www.example.com")
    pointer_to_question = b"\xc0\x0c"
    cname = pointer_to_question + struct.pack("!HHIH", 5, 1, 60, 6) + b"\x03cdn\xc0\x10"
    a = a_record(b"\x03cdn\xc0\x10", bytes([93, 184, 216, 34]), ttl=42)
    parsed = message.parse_answer(answer(query, cname, a))
    assert [(r.name, r.rtype, r.ttl, r.value) for r in parsed.records] == [
        ("www.example.com", message.CNAME, 60, "cdn.example.com"),
        ("cdn.example.com", message.A, 42, "93.184.216.34"),
    ]


def test_a_dot_inside_a_label_never_matches_a_name() -> None:
    query = (
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
        + b"\x08evil.com\x07allowed\x03com\x00"
        + b"\x00\x01\x00\x01"
    )
    assert message.parse_query(query).name == "evil\\046com.allowed.com"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        struct.pack("!HHHHHH", 1, 0x8000, 1, 0, 0, 0) + encode("a.com") + b"\x00\x01\x00\x01",  # a response
        struct.pack("!HHHHHH", 1, 0x0100, 2, 0, 0, 0) + encode("a.com") + b"\x00\x01\x00\x01",  # 2 questions
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x05ab",  # label past the end
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01",  # pointer loop
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x3fa" * 5 + b"\x00\x00\x01\x00\x01",
        struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",
    ],
)
def test_malformed_queries(data: bytes) -> None:
    with pytest.raises(MalformedMessage):
        message.parse_query(data)


def test_truncated_answer_record() -> None:
    query = message.build_query(1, "a.com")
    with pytest.raises(MalformedMessage):
        message.parse_answer(answer(query, a_record(b"\xc0\x0c", b"\x01\x02\x03\x04")[:-2]))


def test_error_reply_for_unreadable_question() -> None:
    data = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0) + b"\x05ab"
    reply = message.error_reply(data, message.FORMERR)
    assert reply is not None and struct.unpack("!HH", reply[:4]) == (9, 0x8181)
    assert message.error_reply(b"\x01", message.FORMERR) is None
