"""A test upstream for service bindings and webhooks: an HTTP/1.1 server on loopback
(a thread of its own) that records every request it gets.

Routes: ``/stream`` answers ``first\\n`` at once (chunked), then waits until
``/release`` is called (or 30 s pass), then ``second\\n``: a client that reads
``first`` before it calls ``/release`` shows that nothing buffered the answer.
``/status/<n>`` answers status ``n``; ``/bytes/<n>``, ``n`` bytes; ``/fail-once`` answers 503 the first time, 200
after. Anything else answers 200 with JSON saying
the method, path, query, body length and whether ``header`` held ``secret`` (the
secret itself is never echoed).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Upstream:
    header: str = "X-Api-Key"
    secret: str = "up-secret"
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    tls: tuple[Path, Path] | None = None  # (certificate, key): HTTPS
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> Upstream:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # a head and a body written apart: no delayed-ACK wait

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = self._chunked()
                else:
                    body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                seen = Seen(self.command, parts.path, parts.query, dict(self.headers.items()), body)
                with upstream.arrived:
                    upstream.seen.append(seen)
                    upstream.arrived.notify_all()
                if parts.path.endswith("/stream"):
                    self._stream()
                elif parts.path.endswith("/release"):
                    upstream.release.set()
                    self._json(200, {"released": True})
                elif parts.path.endswith("/fail-once"):
                    first = sum(s.path == parts.path for s in upstream.seen) == 1
                    self._json(503 if first else 200, {"first": first})
                elif "/bytes/" in parts.path:
                    self._bytes(int(parts.path.rsplit("/", 1)[1]))
                elif "/status/" in parts.path:
                    self._json(int(parts.path.rsplit("/", 1)[1]), {"status": True})
                else:
                    authorized = self.headers.get(upstream.header) == upstream.secret
                    self._json(
                        200,
                        {
                            "method": self.command,
                            "path": parts.path,
                            "query": parts.query,
                            "length": len(body),
                            "authorized": authorized,
                        },
                    )

            do_GET = do_POST = do_PUT = do_DELETE = handle_one

            def _chunked(self) -> bytes:
                body = b""
                while True:
                    line = self.rfile.readline().strip()
                    size = int(line, 16) if line else 0  # b"": the sender gave up
                    if size == 0:
                        self.rfile.readline()
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            def _json(self, status: int, value: object) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _bytes(self, count: int) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(count))
                self.end_headers()
                block = b"x" * 65536
                while count > 0:
                    self.wfile.write(block[: min(count, len(block))])
                    count -= len(block)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk, wait in ((b"first\n", True), (b"second\n", False)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                    if wait:
                        upstream.release.wait(30)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="test-upstream", daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def wait_for(self, count: int, timeout: float = 30) -> list[Seen]:
        """Returns once ``count`` requests arrived (AssertionError after ``timeout``)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.seen) >= count, timeout):
                raise AssertionError(f"{len(self.seen)} of {count} requests arrived in {timeout}s")
            return list(self.seen)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key, and the key (openssl)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
