"""Programs the network tests run inside network namespaces (stdlib only).

``peer.py serve --name N --tcp IP:PORT ... [--udp-echo IP:PORT] [--dns IP:PORT --record NAME=IP ...]``
    An "outside" host: on each TCP address, answers ``GET`` with ``200`` and body
    ``N`` (then closes) and echoes any other line; echoes UDP datagrams; on the DNS
    address (UDP and TCP) answers A queries from its records (TTL 30), CNAMEs
    (``--cname NAME=TARGET``) first, NXDOMAIN otherwise.

``peer.py agent``
    A sandbox's hands: reads JSON requests, one a line, on stdin and writes one JSON
    result a line on stdout. Ops: ``connect`` (HTTP GET), ``resolve`` (A query to a
    server, UDP or TCP), ``listen`` (a TCP banner server), ``hold`` and ``send`` (a
    kept-open echo connection), ``flood`` (many connection attempts), ``udp_listen``
    / ``udp_received`` / ``udp_send`` and ``spoof_udp`` (a raw datagram with a forged
    source address).
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import struct
import sys
import threading
from typing import Any

TTL = 30


def _encode(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    labels: list[str] = []
    end, hops = -1, 0
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            hops += 1
            if hops > 20:
                raise ValueError("loop")
            continue
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), end if end >= 0 else offset
        labels.append(data[offset : offset + length].decode())
        offset += length


def dns_answer(query: bytes, records: dict[str, str], cnames: dict[str, str]) -> bytes:
    ident, flags = struct.unpack_from("!HH", query)
    name, end = _read_name(query, 12)
    qtype = struct.unpack_from("!H", query, end)[0]
    question = query[12 : end + 4]
    answers = []
    target = name
    if target in cnames:
        answers.append(_encode(target) + struct.pack("!HHIH", 5, 1, TTL, len(_encode(cnames[target]))))
        answers[-1] += _encode(cnames[target])
        target = cnames[target]
    rcode = 0
    if target in records and qtype == 1:
        answers.append(
            _encode(target) + struct.pack("!HHIH", 1, 1, TTL, 4) + socket.inet_aton(records[target])
        )
    elif target not in records:
        rcode = 3
    header = struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


def dns_query(ident: int, name: str) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + _encode(name) + struct.pack("!HH", 1, 1)


def parse_response(data: bytes) -> dict[str, Any]:
    _ident, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", data)
    offset = 12
    for _ in range(qd):
        _, offset = _read_name(data, offset)
        offset += 4
    addresses = []
    for _ in range(an):
        _, offset = _read_name(data, offset)
        rtype, _cls, _ttl, size = struct.unpack_from("!HHIH", data, offset)
        offset += 10
        if rtype == 1:
            addresses.append(socket.inet_ntoa(data[offset : offset + size]))
        offset += size
    return {"rcode": flags & 0xF, "addresses": addresses}


def _hostport(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def serve(args: argparse.Namespace) -> None:
    records = dict(r.split("=", 1) for r in args.record)
    cnames = dict(c.split("=", 1) for c in args.cname)
    name = args.name.encode()

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if line.startswith(b"GET "):
                    body = name + b"\n"
                    self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                    return
                self.wfile.write(line)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(dns_answer(data, records, cnames), self.client_address)

    class DnsTcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            size = struct.unpack("!H", self.rfile.read(2))[0]
            reply = dns_answer(self.rfile.read(size), records, cnames)
            self.wfile.write(struct.pack("!H", len(reply)) + reply)

    class Threaded(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(data, self.client_address)

    servers: list[socketserver.BaseServer] = [Threaded(_hostport(a), Tcp) for a in args.tcp]
    servers += [socketserver.ThreadingUDPServer(_hostport(a), Echo) for a in args.udp_echo]
    if args.dns:
        servers += [
            socketserver.ThreadingUDPServer(_hostport(args.dns), Udp),
            Threaded(_hostport(args.dns), DnsTcp),
        ]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()  # run until the test closes our stdin (or kills us)


class Agent:
    def __init__(self) -> None:
        self.held: dict[str, socket.socket] = {}
        self.udp: socket.socket | None = None

    def connect(self, host: str, port: int, timeout: float = 1.0) -> dict[str, Any]:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        return {
            "ok": data.startswith(b"HTTP/1.0 200"),
            "body": data.split(b"\r\n\r\n", 1)[-1].decode().strip(),
        }

    def resolve(self, name: str, server: str, tcp: bool = False, timeout: float = 2.0) -> dict[str, Any]:
        query = dns_query(0x1234, name)
        if tcp:
            with socket.create_connection((server, 53), timeout=timeout) as sock:
                sock.sendall(struct.pack("!H", len(query)) + query)
                size = struct.unpack("!H", sock.recv(2))[0]
                data = b""
                while len(data) < size:
                    data += sock.recv(size - len(data))
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(timeout)
                sock.sendto(query, (server, 53))
                data = sock.recv(4096)
        return {"ok": True, **parse_response(data)}

    def listen(self, port: int) -> dict[str, Any]:
        server = socket.create_server(("0.0.0.0", port))

        def run() -> None:
            while True:
                conn, _ = server.accept()
                conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nsandbox\n")
                conn.close()

        threading.Thread(target=run, daemon=True).start()
        return {"ok": True}

    def hold(self, key: str, host: str, port: int, timeout: float = 1.0) -> dict[str, Any]:
        self.held[key] = socket.create_connection((host, port), timeout=timeout)
        return self.send(key, "hello")

    def send(self, key: str, text: str) -> dict[str, Any]:
        sock = self.held[key]
        sock.sendall(text.encode() + b"\n")
        reply = sock.recv(4096).decode().strip()
        if not reply:
            raise ConnectionResetError("closed")
        return {"ok": reply == text, "body": reply}

    def flood(self, host: str, port: int, count: int) -> dict[str, Any]:
        failed = 0
        for _ in range(count):
            try:
                socket.create_connection((host, port), timeout=0.5).close()
            except OSError:
                failed += 1
        return {"ok": True, "failed": failed}

    def udp_listen(self, port: int) -> dict[str, Any]:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("0.0.0.0", port))
        self.udp.settimeout(0.5)
        return {"ok": True}

    def udp_send(self, host: str, port: int, text: str) -> dict[str, Any]:
        assert self.udp is not None
        self.udp.sendto(text.encode(), (host, port))
        return self.udp_received()

    def udp_received(self) -> dict[str, Any]:
        assert self.udp is not None
        try:
            return {"ok": True, "body": self.udp.recv(2048).decode()}
        except TimeoutError:
            return {"ok": False, "error": "timeout"}

    def spoof_udp(self, src: str, sport: int, dst: str, dport: int, text: str) -> dict[str, Any]:
        payload = text.encode()
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(udp),
            0,
            0,
            64,
            17,
            0,
            socket.inet_aton(src),
            socket.inet_aton(dst),
        )
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW) as raw:
            raw.sendto(header + udp, (dst, 0))
        return {"ok": True}


def agent() -> None:
    hands = Agent()
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        try:
            result = getattr(hands, op)(**request)
        except (OSError, ValueError) as exc:
            result = {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
        print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--tcp", action="append", default=[])
    s.add_argument("--udp-echo", action="append", default=[])
    s.add_argument("--dns")
    s.add_argument("--record", action="append", default=[])
    s.add_argument("--cname", action="append", default=[])
    sub.add_parser("agent")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args)
    else:
        agent()


if __name__ == "__main__":
    main()
