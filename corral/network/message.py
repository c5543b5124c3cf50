"""DNS messages (RFC 1035 wire format): just what the resolver needs, parsed strictly.

Queries come from untrusted sandboxes and answers from the upstream server; both are
bounded (names of at most 255 octets, at most 128 compression pointers per name,
every offset checked) and anything malformed raises :class:`MalformedMessage`.
The resolver never builds answers of its own: it relays the upstream's answer with
the client's id, or replies with an error code (NXDOMAIN, SERVFAIL, REFUSED) or an
empty NOERROR (AAAA: there is no IPv6 egress).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

HEADER = struct.Struct("!HHHHHH")
MAX_UDP = 4096

A, CNAME, AAAA = 1, 5, 28
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5
_QR, _TC, _RD, _RA = 0x8000, 0x0200, 0x0100, 0x0080
# Bytes a label may carry as themselves (folded to lower case); any other byte, a dot
# inside a label included, is written as a \ddd escape and so never matches a policy.
_SAFE = {b: chr(b).lower() for b in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_*"}


class MalformedMessage(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    id: int
    flags: int
    name: str  # lower case, no trailing dot; "" for the root
    qtype: int
    qclass: int
    end: int  # offset just after the question section


@dataclass(frozen=True)
class Record:
    name: str
    rtype: int
    ttl: int
    value: str  # an address for A/AAAA, a name for CNAME, "" otherwise


@dataclass(frozen=True)
class Answer:
    id: int
    rcode: int
    truncated: bool
    question: Question
    records: tuple[Record, ...]


def _name(data: bytes, offset: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at ``offset``; return it and the offset just
    after it in the original position."""
    labels: list[str] = []
    end = -1
    total = 0
    for _ in range(128):
        if offset >= len(data):
            raise MalformedMessage("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise MalformedMessage("truncated compression pointer")
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length & 0xC0:
            raise MalformedMessage("unknown label type")
        offset += 1
        if length == 0:
            return ".".join(labels), (end if end >= 0 else offset)
        label = data[offset : offset + length]
        if len(label) != length:
            raise MalformedMessage("label runs past the message")
        total += length + 1
        if total > 255:
            raise MalformedMessage("name longer than 255 octets")
        labels.append("".join(_SAFE.get(b) or f"\\{b:03d}" for b in label))
        offset += length
    raise MalformedMessage("too many compression pointers")


def parse_query(data: bytes) -> Question:
    """The single question of a standard query; MalformedMessage otherwise."""
    if len(data) < HEADER.size:
        raise MalformedMessage("shorter than a header")
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(data)
    if flags & _QR or (flags >> 11) & 0xF != 0:
        raise MalformedMessage("not a standard query")
    if qdcount != 1:
        raise MalformedMessage("not exactly one question")
    return _question(data, ident, flags)


def _question(data: bytes, ident: int, flags: int) -> Question:
    name, offset = _name(data, HEADER.size)
    if offset + 4 > len(data):
        raise MalformedMessage("truncated question")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    return Question(ident, flags, name, qtype, qclass, offset + 4)


def parse_answer(data: bytes) -> Answer:
    """The upstream's response: its question and its answer section."""
    if len(data) < HEADER.size:
        raise MalformedMessage("shorter than a header")
    ident, flags, qdcount, ancount, _ns, _ar = HEADER.unpack_from(data)
    if not flags & _QR:
        raise MalformedMessage("not a response")
    if qdcount != 1:
        raise MalformedMessage("not exactly one question")
    question = _question(data, ident, flags)
    offset = question.end
    records = []
    for _ in range(ancount):
        owner, offset = _name(data, offset)
        if offset + 10 > len(data):
            raise MalformedMessage("truncated record")
        rtype, _rclass, ttl, rdlength = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        rdata = data[offset : offset + rdlength]
        if len(rdata) != rdlength:
            raise MalformedMessage("record data runs past the message")
        value = ""
        if rtype == A and rdlength == 4:
            value = str(ipaddress.IPv4Address(rdata))
        elif rtype == AAAA and rdlength == 16:
            value = str(ipaddress.IPv6Address(rdata))
        elif rtype == CNAME:
            value, _ = _name(data, offset)
        records.append(Record(owner, rtype, min(ttl, 0x7FFFFFFF), value))
        offset += rdlength
    return Answer(ident, flags & 0xF, bool(flags & _TC), question, tuple(records))


def with_id(data: bytes, ident: int) -> bytes:
    return struct.pack("!H", ident) + data[2:]


def reply(query: bytes, question: Question, rcode: int) -> bytes:
    """A response to ``query`` with its question, no records, and ``rcode``."""
    flags = _QR | _RA | (question.flags & _RD) | (rcode & 0xF)
    return HEADER.pack(question.id, flags, 1, 0, 0, 0) + query[HEADER.size : question.end]


def build_query(ident: int, name: str, qtype: int = A) -> bytes:
    """A recursive query for ``name`` (used to learn the addresses of denied names)."""
    encoded = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split(".") if p) + b"\x00"
    return HEADER.pack(ident, _RD, 1, 0, 0, 0) + encoded + struct.pack("!HH", qtype, 1)


def error_reply(query: bytes, rcode: int) -> bytes | None:
    """A header-only error response for a query whose question could not be read,
    or None if not even the header could."""
    if len(query) < HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", query)
    return HEADER.pack(ident, _QR | _RA | (flags & _RD) | (rcode & 0xF), 0, 0, 0, 0)
