"""A DNS server on loopback that the security server uses as its only upstream.

Names under :data:`SILENT` are never answered (an upstream that never answers: what
makes a resolver's slots fill); names under :data:`ANSWERED` get an A record at once;
every other name is relayed to the host's own upstreams (``CORRAL_NETWORK_DNS_UPSTREAMS``
of the environment, or ``/etc/resolv.conf``), so the server's other tests resolve as
they would without it. UDP and TCP, on one port, each in a thread of its own; relays
run on a small pool with a timeout. Counts what it saw of each zone.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

from corral.network import message
from corral.network.resolver import Upstream, parse_upstream, system_upstreams

SILENT = "silent.corral-dns.test"
ANSWERED = "answered.corral-dns.test"
ADDRESS = "192.0.2.53"  # what every name under ANSWERED resolves to
RELAY_TIMEOUT_S = 3.0


class DnsUpstream:
    """See the module docstring. :meth:`start` binds (port 0: any free port, the same
    for UDP and TCP); :meth:`close` stops it."""

    def __init__(self) -> None:
        self.port = 0
        self.silent = 0  # queries seen under SILENT
        self.answered = 0  # queries answered under ANSWERED
        raw = os.environ.get("CORRAL_NETWORK_DNS_UPSTREAMS")
        self.relays: list[Upstream] = (
            [parse_upstream(u) for u in json.loads(raw)] if raw else system_upstreams()
        )
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dns-upstream")
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsUpstream:
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(64)
            self._udp, self._tcp, self.port = udp, tcp, udp.getsockname()[1]
            break
        else:
            raise RuntimeError("no port free for both UDP and TCP")
        threading.Thread(target=self._serve_udp, name="dns-upstream-udp", daemon=True).start()
        threading.Thread(target=self._serve_tcp, name="dns-upstream-tcp", daemon=True).start()
        return self

    def close(self) -> None:
        self._closed.set()
        for sock in (self._udp, self._tcp):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- answering -----------------------------------------------------------------

    def _answer(self, query: bytes, *, tcp: bool) -> bytes | None:
        """The response to ``query`` (None: say nothing)."""
        try:
            question = message.parse_query(query)
        except message.MalformedMessage:
            return None
        if question.name == SILENT or question.name.endswith("." + SILENT):
            with self._lock:
                self.silent += 1
            return None
        if question.name == ANSWERED or question.name.endswith("." + ANSWERED):
            with self._lock:
                self.answered += 1
            return _a_record(query, question, ADDRESS if question.qtype == message.A else None)
        return self._relay(query, tcp=tcp)

    def _relay(self, query: bytes, *, tcp: bool) -> bytes | None:
        for host, port in self.relays:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM) as sock:
                    sock.settimeout(RELAY_TIMEOUT_S)
                    sock.connect((host, port))
                    if tcp:
                        sock.sendall(struct.pack("!H", len(query)) + query)
                        return _read_frame(sock)
                    sock.send(query)
                    return sock.recv(65535)
            except OSError:
                continue
        return None

    def _serve_udp(self) -> None:
        assert self._udp is not None
        while not self._closed.is_set():
            try:
                query, peer = self._udp.recvfrom(65535)
                self._pool.submit(self._reply_udp, query, peer)
            except (OSError, RuntimeError):  # closed (the pool too)
                return

    def _reply_udp(self, query: bytes, peer: tuple[str, int]) -> None:
        response = self._answer(query, tcp=False)
        if response is not None and self._udp is not None and not self._closed.is_set():
            try:
                self._udp.sendto(response, peer)
            except OSError:
                pass

    def _serve_tcp(self) -> None:
        assert self._tcp is not None
        while not self._closed.is_set():
            try:
                conn, _ = self._tcp.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_connection, args=(conn,), daemon=True).start()

    def _serve_connection(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                query = _read_frame(conn)
                response = self._answer(query, tcp=True) if query else None
                if response is None:
                    self._closed.wait(10)  # an upstream that never answers keeps the line open
                    return
                conn.sendall(struct.pack("!H", len(response)) + response)
            except OSError:
                pass


def _read_frame(sock: socket.socket) -> bytes:
    head = _read_exactly(sock, 2)
    return _read_exactly(sock, struct.unpack("!H", head)[0])


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _a_record(query: bytes, question: message.Question, address: str | None) -> bytes:
    """NOERROR with one A record of ``address`` (TTL 5 s), or with none."""
    records = b""
    if address is not None:
        rdata = bytes(int(part) for part in address.split("."))
        records = b"\xc0\x0c" + struct.pack("!HHIH", message.A, 1, 5, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", question.id, 0x8180, 1, 1 if records else 0, 0, 0)
    return header + query[12 : question.end] + records
