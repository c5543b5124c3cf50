"""A client of the xgen sandbox API (spec 002 and its supplement), written the way
xgen's own SDKs behave: the reference of the protocol in this repository.

REST (``XgenClient``): the API key is exchanged for a token at ``/api/v1/auth/token``
and exchanged again when under 60 s remain; every request sends ``Authorization:
Bearer <token>``; ``wait_running`` polls ``GET /sandboxes/{id}`` once a second until
``running`` (60 s), as the SDKs do.

The WebSocket (``XgenSocket``, from ``XgenClient.connect``): ``?token=`` in the URL;
every message is a 9-byte header (type uint8, channel uint32 BE, id uint32 BE) and a
MessagePack payload (raw bytes for ExecStdin/ExecStdout/ExecStderr and FsRead's
answer). The client waits for SandboxReady (10 s) before anything else. A process gets
a channel of the client's choosing (a millisecond timestamp, kept unique); its stdin
is prefixed with a 4-byte process id of 0. File requests go on channel 0 with ids 1,
2, 3 ... and are answered on the same id (FsRead: raw bytes; FsList: an array;
FsWrite, FsRemove, FsWatch: Ack; a failure: Error ``{code, message}``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

import httpx
import msgpack
import websockets

HEADER = struct.Struct(">BII")

PING, PONG, ERROR, ACK = 0x01, 0x02, 0x03, 0x04
EXEC_START, EXEC_STDIN, EXEC_STDOUT, EXEC_STDERR, EXEC_EXIT, EXEC_SIGNAL, EXEC_RESIZE = range(0x20, 0x27)
FS_READ, FS_WRITE, FS_LIST, FS_REMOVE, FS_WATCH, FS_EVENT = range(0x30, 0x36)
PORT_OPEN, PORT_CLOSE = 0x40, 0x41
SANDBOX_READY, SANDBOX_ERROR, SANDBOX_STATS = 0x50, 0x51, 0x52
RAW = {EXEC_STDIN, EXEC_STDOUT, EXEC_STDERR}


class XgenError(Exception):
    """An error answer: over REST ``{error, code, details}`` with its status, over the
    WebSocket an Error frame's ``{code, message}``."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


def pack(kind: int, channel: int, id: int, payload: object = None, raw: bytes | None = None) -> bytes:
    body = raw if raw is not None else (b"" if payload is None else msgpack.packb(payload, use_bin_type=True))
    return HEADER.pack(kind, channel, id) + body


@dataclass
class Frame:
    kind: int
    channel: int
    id: int
    payload: bytes

    def body(self) -> Any:
        return msgpack.unpackb(self.payload, raw=False) if self.payload else None


def parse(data: bytes) -> Frame:
    kind, channel, id_ = HEADER.unpack_from(data)
    return Frame(kind, channel, id_, data[HEADER.size :])


class XgenClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.http = httpx.AsyncClient(base_url=f"{self.base_url}/api/v1", timeout=timeout)
        self._token: str | None = None
        self._expires = 0.0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def token(self) -> str:
        if self._token is None or self._expires - time.time() < 60:
            answer = await self.http.post("/auth/token", json={"api_key": self.api_key})
            body = self._checked(answer, 200)
            self._token = body["token"]
            self._expires = datetime.fromisoformat(body["expires_at"]).timestamp()
        assert self._token is not None
        return self._token

    async def request(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {await self.token()}"}
        answer = await self.http.request(method, path, headers=headers, **kwargs)
        return self._checked(answer, expect)

    @staticmethod
    def _checked(answer: httpx.Response, expect: int) -> Any:
        if answer.status_code != expect:
            try:
                body = answer.json()
            except ValueError:
                body = {"error": answer.text, "code": "?"}
            raise XgenError(
                answer.status_code, body.get("code", "?"), body.get("error", ""), body.get("details")
            )
        return answer.json() if answer.content else None

    # ---- sandboxes

    async def create(self, template: str = "base", **fields: Any) -> dict[str, Any]:
        return dict(await self.request("POST", "/sandboxes", 201, json={"template": template, **fields}))

    async def get(self, sandbox_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/sandboxes/{sandbox_id}"))

    async def list(self) -> list[dict[str, Any]]:
        return list(await self.request("GET", "/sandboxes"))

    async def delete(self, sandbox_id: str) -> None:
        await self.request("DELETE", f"/sandboxes/{sandbox_id}", 204)

    async def keepalive(self, sandbox_id: str) -> None:
        await self.request("POST", f"/sandboxes/{sandbox_id}/keepalive", 204)

    async def exec(
        self, sandbox_id: str, cmd: str, timeout_seconds: int | None = None, **fields: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"command": "sh", "args": ["-c", cmd], **fields}
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        return dict(await self.request("POST", f"/sandboxes/{sandbox_id}/exec", json=body))

    async def services(self, sandbox_id: str) -> builtins.list[dict[str, Any]]:
        return list(await self.request("GET", f"/sandboxes/{sandbox_id}/services"))

    async def wait_running(self, sandbox_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            sandbox = await self.get(sandbox_id)
            if sandbox["status"] == "running":
                return sandbox
            if sandbox["status"] in ("error", "stopped") or time.monotonic() > deadline:
                raise AssertionError(f"sandbox {sandbox_id} is {sandbox['status']}")
            await asyncio.sleep(1)  # the SDKs' poll interval

    @contextlib.asynccontextmanager
    async def connect(self, sandbox_id: str) -> AsyncIterator[XgenSocket]:
        url = (
            self.base_url.replace("http", "ws", 1)
            + f"/api/v1/sandboxes/{sandbox_id}/ws?token={await self.token()}"
        )
        async with websockets.connect(url, max_size=64 << 20, compression=None) as ws:
            sock = XgenSocket(ws)
            reader = asyncio.create_task(sock._read())
            try:
                await asyncio.wait_for(sock.ready.wait(), 10)
                yield sock
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reader


@dataclass
class Process:
    socket: XgenSocket
    channel: int
    process_id: str = ""
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    output: asyncio.Event = field(default_factory=asyncio.Event)  # set on every chunk
    exit: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    async def send(self, data: bytes) -> None:
        await self.socket.send(pack(EXEC_STDIN, self.channel, 0, raw=b"\0\0\0\0" + data))

    async def resize(self, cols: int, rows: int) -> None:
        await self.socket.send(pack(EXEC_RESIZE, self.channel, 0, {"cols": cols, "rows": rows}))

    async def signal(self, name: str) -> None:
        await self.socket.send(pack(EXEC_SIGNAL, self.channel, 0, {"signal": name}))

    async def wait(self, timeout: float = 60) -> int:
        body = await asyncio.wait_for(asyncio.shield(self.exit), timeout)
        assert body["exit_code"] == body["exitCode"], body
        return int(body["exit_code"])

    async def until(self, text: bytes, timeout: float = 30) -> None:
        """Until ``text`` is in the output so far."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            self.output.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} not in {bytes(self.stdout[-500:])!r}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.output.wait(), remaining)


class XgenSocket:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ready = asyncio.Event()
        self.first: Frame | None = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.processes: dict[int, Process] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ports: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.stats: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: asyncio.Queue[Frame] = asyncio.Queue()  # Error frames no request waits for
        self.pongs: asyncio.Queue[Frame] = asyncio.Queue()
        self.sandbox_errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed = asyncio.Event()  # the server closed the connection
        self._last_channel = 0

    async def send(self, data: bytes) -> None:
        await self.ws.send(data)

    async def _read(self) -> None:
        try:
            await self._frames()
        finally:
            self.closed.set()

    async def _frames(self) -> None:
        async for message in self.ws:
            assert isinstance(message, bytes), "the server sends binary frames only"
            frame = parse(message)
            if self.first is None:
                self.first = frame
            if frame.kind == SANDBOX_READY:
                self.ready.set()
            elif frame.kind == PING:
                await self.send(pack(PONG, frame.channel, frame.id))
            elif frame.kind == PONG:
                self.pongs.put_nowait(frame)
            elif frame.kind in (EXEC_STDOUT, EXEC_STDERR, EXEC_EXIT) and frame.channel in self.processes:
                process = self.processes[frame.channel]
                if frame.kind == EXEC_EXIT:
                    process.exit.set_result(frame.body())
                else:
                    (process.stdout if frame.kind == EXEC_STDOUT else process.stderr).extend(frame.payload)
                    process.output.set()
            elif frame.kind == FS_EVENT:
                self.events.put_nowait(frame.body())
            elif frame.kind in (PORT_OPEN, PORT_CLOSE):
                self.ports.put_nowait(("open" if frame.kind == PORT_OPEN else "close", frame.body()["port"]))
            elif frame.kind == SANDBOX_STATS:
                self.stats.put_nowait(frame.body())
            elif frame.kind == SANDBOX_ERROR:
                self.sandbox_errors.put_nowait(frame.body())
            elif (frame.channel, frame.id) in self._waiting():
                self.pending.pop(self._key(frame)).set_result(frame)
            elif frame.kind == ERROR:
                self.errors.put_nowait(frame)

    def _waiting(self) -> set[tuple[int, int]]:
        return {(k >> 32, k & 0xFFFFFFFF) for k in self.pending}

    @staticmethod
    def _key(frame: Frame) -> int:
        return frame.channel << 32 | frame.id

    async def call(self, kind: int, payload: object = None, channel: int = 0, timeout: float = 60) -> Frame:
        """Send a request on ``channel`` with a new id; its answer (XgenError for an Error)."""
        id_ = next(self.ids)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.pending[channel << 32 | id_] = future
        await self.send(pack(kind, channel, id_, payload))
        frame = await asyncio.wait_for(future, timeout)
        if frame.kind == ERROR:
            body = frame.body()
            raise XgenError(0, body["code"], body["message"])
        return frame

    # ---- processes

    def new_channel(self) -> int:
        channel = max(int(time.time() * 1000) & 0x7FFFFFFF, self._last_channel + 1)
        self._last_channel = channel
        return channel

    async def exec(self, command: str, args: list[str] | None = None, **fields: Any) -> Process:
        channel = self.new_channel()
        process = Process(self, channel)
        self.processes[channel] = process
        body = {
            "command": command,
            "args": args or [],
            "env": None,
            "cwd": "",
            "tty": False,
            "cols": 0,
            "rows": 0,
        }
        ack = await self.call(EXEC_START, {**body, **fields}, channel=channel)
        assert ack.kind == ACK and ack.body()["channel"] == channel, ack
        process.process_id = ack.body()["process_id"]
        return process

    # ---- files

    async def read(self, path: str) -> bytes:
        frame = await self.call(FS_READ, {"path": path})
        assert frame.kind == FS_READ
        return frame.payload

    async def write(self, path: str, content: bytes | str, mode: int | None = None) -> None:
        body: dict[str, Any] = {"path": path, "content": content}
        if mode is not None:
            body["mode"] = mode
        assert (await self.call(FS_WRITE, body)).kind == ACK

    async def list(self, path: str) -> list[dict[str, Any]]:
        frame = await self.call(FS_LIST, {"path": path})
        assert frame.kind == FS_LIST
        return list(frame.body())

    async def remove(self, path: str, recursive: bool = False) -> None:
        assert (await self.call(FS_REMOVE, {"path": path, "recursive": recursive})).kind == ACK

    async def watch(self, path: str) -> None:
        assert (await self.call(FS_WATCH, {"path": path})).kind == ACK

    async def unwatch(self, path: str) -> None:
        assert (await self.call(FS_WATCH, {"path": path, "unwatch": True})).kind == ACK

    async def ping(self) -> Frame:
        id_ = next(self.ids)
        await self.send(pack(PING, 0, id_))
        frame = await asyncio.wait_for(self.pongs.get(), 10)
        assert frame.id == id_
        return frame
