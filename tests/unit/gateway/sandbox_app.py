"""Servers the gateway tests run inside a sandbox: ``python3 sandbox_app.py PORT [HOST
[PORT_FILE]]``; with PORT 0 the kernel chooses the port, written to PORT_FILE once
listening.

Standard library only, so it runs with any sandbox's python3. HTTP/1.1 with keep-alive
on one port, and a WebSocket echo (a plain RFC 6455 implementation) on ``/ws``:

    GET  /hello               "hello from the sandbox"
    GET  /headers...          JSON {method, target, headers} of the request as received
    POST /upload              the body (length or chunked) hashed as it streams in:
                              {"bytes": n, "sha256": hex}
    GET  /sse                 text/event-stream, chunked: ``data: 1``; each next event
                              only after a GET /sse/next; ``n`` events (?n=3)
    GET  /cors                answers with permissive Access-Control-* headers
    GET  /redirect            302 to /hello
    GET  /cookie              sets a cookie with Domain=localhost and Path=/
    GET  /page.html, /app.js, /data.json
                              a page whose script loads data.json and writes it in
    GET  /endless-body        a body that never ends (1 MiB chunks, chunked encoding);
                              /state then tells whether the server saw the client go
    GET  /hang                never answers; /state tells when the client went away
    GET  /state               JSON of what the server noticed
    GET  /die                 reads the request and closes without answering
    GET  /die-mid             a head promising 100000 bytes, 10 of them, then closes
    GET  /garbage             an answer that is not HTTP
    GET  /endless-headers     a status line, then headers until the client gives up
    GET  /slow-headers        a status line, then one byte every 0.2 s
    GET  /ws                  WebSocket echo; text "close:CODE" makes the server close
                              with CODE and reason "bye"; subprotocols: picks the first
    GET  /ws-last-close       the close code the last WebSocket client sent
    HEAD /hello               the head of GET /hello, no body
    GET  /ws-refuse           a WebSocket upgrade refused with 403
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import struct
import sys

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAGE = b"""<!doctype html><html><head><title>preview</title></head><body>
<div id="out">pending</div><script src="app.js"></script></body></html>"""
SCRIPT = b"""var x = new XMLHttpRequest();
x.open("GET", "data.json", false);
x.send();
document.getElementById("out").textContent = "loaded:" + JSON.parse(x.responseText).value;"""
STATE: dict[str, object] = {
    "last_close": None,
    "endless_body_ended": None,
    "hang_ended": None,
    "slow_headers_started": None,
}
NEXT_EVENT = asyncio.Event()


async def respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str = "text/plain", extra: str = ""
) -> None:
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
        + body
    )
    await writer.drain()


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """Yield the request body in pieces (Content-Length or chunked)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            left = size
            while left:
                piece = await reader.read(min(left, 1 << 20))
                if not piece:
                    raise ConnectionError("body ended early")
                left -= len(piece)
                yield piece
            await reader.readexactly(2)
    left = int(headers.get("content-length", "0"))
    while left:
        piece = await reader.read(min(left, 1 << 20))
        if not piece:
            raise ConnectionError("body ended early")
        left -= len(piece)
        yield piece


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            pairs = [line.split(":", 1) for line in lines[1:] if ":" in line]
            raw = [(k.strip(), v.strip()) for k, v in pairs]
            headers = {k.lower(): v for k, v in raw}
            path, _, query = target.partition("?")
            if headers.get("upgrade", "").lower() == "websocket":
                await websocket(reader, writer, path, headers)
                return
            if path == "/upload":
                digest, count = hashlib.sha256(), 0
                async for piece in read_body(reader, headers):
                    digest.update(piece)
                    count += len(piece)
                body = json.dumps({"bytes": count, "sha256": digest.hexdigest()}).encode()
                await respond(writer, 200, body, "application/json")
                continue
            async for _ in read_body(reader, headers):
                pass
            if not await route(reader, writer, method, path, query, target, raw):
                return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def route(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    method: str,
    path: str,
    query: str,
    target: str,
    raw: list[tuple[str, str]],
) -> bool:
    """Answer one request; False to close the connection."""
    if path == "/hello" and method == "HEAD":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\n")
        await writer.drain()
    elif path == "/hello":
        await respond(writer, 200, b"hello from the sandbox")
    elif path.startswith("/headers"):
        body = json.dumps({"method": method, "target": target, "headers": raw}).encode()
        await respond(writer, 200, body, "application/json")
    elif path == "/sse":
        count = int(query.partition("n=")[2] or 3)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for i in range(1, count + 1):
            event = f"data: {i}\n\n".encode()
            writer.write(b"%x\r\n%b\r\n" % (len(event), event))
            await writer.drain()
            if i < count:
                NEXT_EVENT.clear()
                await asyncio.wait_for(NEXT_EVENT.wait(), 30)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    elif path == "/sse/next":
        NEXT_EVENT.set()
        await respond(writer, 200, b"ok")
    elif path == "/cors":
        extra = (
            "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n"
            "Access-Control-Allow-Methods: *\r\nAccess-Control-Expose-Headers: X-Secret\r\n"
        )
        await respond(writer, 200, b"cors", extra=extra)
    elif path == "/redirect":
        await respond(writer, 302, b"", extra="Location: /hello\r\n")
    elif path == "/cookie":
        await respond(writer, 200, b"cookie", extra="Set-Cookie: a=b; Domain=localhost; Path=/; HttpOnly\r\n")
    elif path == "/page.html":
        await respond(writer, 200, PAGE, "text/html")
    elif path == "/app.js":
        await respond(writer, 200, SCRIPT, "application/javascript")
    elif path == "/data.json":
        await respond(writer, 200, b'{"value": "from-the-sandbox-42"}', "application/json")
    elif path == "/endless-body":
        STATE["endless_body_ended"] = False
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n%b\r\n" % (1 << 20, b"z" * (1 << 20))
        try:
            while True:
                writer.write(piece)
                await writer.drain()
        finally:
            STATE["endless_body_ended"] = True
    elif path == "/hang":
        STATE["hang_ended"] = False
        try:
            await reader.read()  # until the other side closes
        finally:
            STATE["hang_ended"] = True
        return False
    elif path == "/state":
        await respond(writer, 200, json.dumps(STATE).encode(), "application/json")
    elif path == "/ws-last-close":
        await respond(writer, 200, json.dumps(STATE["last_close"]).encode(), "application/json")
    elif path == "/die":
        return False
    elif path == "/die-mid":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789")
        await writer.drain()
        return False
    elif path == "/garbage":
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        return False
    elif path == "/endless-headers":
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(1_000_000):
            writer.write(b"X-Filler-%d: %b\r\n" % (i, b"a" * 1000))
            await writer.drain()
        return False
    elif path == "/slow-headers":
        STATE["slow_headers_started"] = True
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(300):
            writer.write(b"X")
            await writer.drain()
            await asyncio.sleep(0.2)
        return False
    else:
        await respond(writer, 404, b"no such page")
    return True


async def websocket(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, headers: dict[str, str]
) -> None:
    if path == "/ws-refuse":
        await respond(writer, 403, b"refused by the sandbox", extra="X-Why: test\r\n")
        return
    accept = base64.b64encode(hashlib.sha1(headers["sec-websocket-key"].encode() + GUID).digest())
    extra = ""
    if headers.get("sec-websocket-protocol"):
        extra = f"Sec-WebSocket-Protocol: {headers['sec-websocket-protocol'].split(',')[0].strip()}\r\n"
    writer.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: "
        + accept
        + b"\r\nSet-Cookie: ws=1; Domain=localhost\r\n"
        + extra.encode()
        + b"\r\n"
    )
    await writer.drain()
    message, kind = b"", 0
    while True:
        first, second = await reader.readexactly(2)
        fin, opcode, size = first & 0x80, first & 0x0F, second & 0x7F
        if size == 126:
            size = struct.unpack(">H", await reader.readexactly(2))[0]
        elif size == 127:
            size = struct.unpack(">Q", await reader.readexactly(8))[0]
        mask = await reader.readexactly(4) if second & 0x80 else b""
        data = await reader.readexactly(size)
        if mask:
            data = unmask(data, mask)
        if opcode == 8:
            code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else 1005
            STATE["last_close"] = code
            send_frame(writer, 8, data[:2])
            await writer.drain()
            return
        if opcode == 9:
            send_frame(writer, 10, data)
            continue
        if opcode in (1, 2):
            message, kind = data, opcode
        elif opcode == 0:
            message += data
        if not fin or opcode == 10:
            continue
        if kind == 1 and message.startswith(b"close:"):
            send_frame(writer, 8, struct.pack(">H", int(message[6:])) + b"bye")
            await writer.drain()
            continue
        send_frame(writer, kind, message)
        await writer.drain()


def unmask(data: bytes, mask: bytes) -> bytes:
    size = len(data)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def send_frame(writer: asyncio.StreamWriter, opcode: int, data: bytes) -> None:
    size = len(data)
    if size < 126:
        head = struct.pack(">BB", 0x80 | opcode, size)
    elif size < 65536:
        head = struct.pack(">BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, size)
    writer.write(head + data)


def announce(port: int, path: str) -> None:
    """Writes the port to ``path``, whole once it appears (before any request: no other
    work to block)."""
    with open(path + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(path + ".tmp", path)


async def main() -> None:
    port, host = int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "0.0.0.0"
    server = await asyncio.start_server(handle, host, port, limit=1 << 20)
    port = server.sockets[0].getsockname()[1]
    if len(sys.argv) > 3:
        announce(port, sys.argv[3])
    print(f"listening on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
