"""A server for a sandbox (stdlib only; run there as ``python3 server.py PORT``): what the
gateway must carry. Every answer also sends ``Access-Control-Allow-Origin: *``, which the
gateway must drop.

    GET|POST /echo      JSON {method, path, query, body, authorization}
    GET /stream         five chunks, each sent once the client has the one before
                        (it waits for ``/go?n=...``)
    GET /sse            three server-sent events
    GET /ws             a WebSocket echoing text messages, upper-cased
    GET /               a small HTML page
"""

import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

GO = {n: threading.Event() for n in range(5)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def head(self, status, ctype, length=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Access-Control-Allow-Origin", "*")
        if length is None:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def echo(self):
        url = urlsplit(self.path)
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size).decode() if size else ""
        auth = self.headers.get_all("Authorization") or []
        out = json.dumps(
            {
                "method": self.command,
                "path": url.path,
                "query": url.query,
                "body": body,
                "authorization": auth,
            }
        ).encode()
        self.head(200, "application/json", len(out))
        self.wfile.write(out)

    def do_POST(self):
        self.echo()

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/echo":
            return self.echo()
        if path == "/go":
            GO[int(urlsplit(self.path).query.split("=")[1])].set()
            self.head(200, "text/plain", 2)
            return self.wfile.write(b"ok")
        if path == "/stream":
            self.head(200, "text/plain")
            for n in range(5):
                self.chunk(b"chunk-%d\n" % n)
                GO[n].wait(60)
                GO[n].clear()
            return self.chunk(b"")
        if path == "/sse":
            self.head(200, "text/event-stream")
            for n in range(3):
                self.chunk(b"event: tick\ndata: %d\n\n" % n)
            return self.chunk(b"")
        if path == "/ws":
            return self.websocket()
        page = b"<!doctype html><title>sandbox</title><h1 id=hello>hello from the sandbox</h1>"
        self.head(200, "text/html", len(page))
        self.wfile.write(page)

    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header(
            "Sec-WebSocket-Accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
        )
        self.end_headers()
        self.wfile.flush()
        auth = (self.headers.get("Authorization") or "").encode()
        self.send_frame(b"auth:" + (b"yes" if auth else b"no"))
        while True:
            head = self.rfile.read(2)
            if len(head) < 2 or head[0] & 0x0F == 8:
                return
            size = head[1] & 0x7F
            if size == 126:
                size = int.from_bytes(self.rfile.read(2), "big")
            elif size == 127:
                size = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(size)))
            self.send_frame(data.upper())

    def send_frame(self, data):
        size = len(data)
        head = bytes([0x81, size]) if size < 126 else bytes([0x81, 126]) + size.to_bytes(2, "big")
        self.wfile.write(head + data)
        self.wfile.flush()


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Handler).serve_forever()
