"""A fake of the Anthropic Messages API: a real HTTP/1.1 server on loopback (a thread
of its own) that answers ``POST /v1/messages`` from a script of turns, streamed
(server-sent events, as the API streams) or not, and records every request it got,
headers included (so a test can check where the key arrived).

A ``Turn`` is what the model says in one answer: ``Text`` and ``ToolUse`` blocks in
order; its ``stop_reason`` is ``tool_use`` when it holds a tool use, else ``end_turn``.
A turn with a ``gate`` (a ``threading.Event``) starts its answer (a streamed one sends
``message_start`` and holds) and finishes it only once the gate is set, so a test can
act while the model is "thinking". Requests that ``takes(body)`` refuses (by default
none: every call takes the next turn) and calls past the end of the script are
answered ``Text(default)``, ``end_turn``. Each answer's ``usage`` says
``input_tokens`` = the request body's length / 10 and ``output_tokens`` = 7 per
block.

Any request whose ``x-api-key`` is not ``key`` (when ``key`` is set) gets the API's 401
envelope. ``/v1/messages/count_tokens`` answers a count; other paths 404.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: dict[str, Any]


@dataclass
class Turn:
    blocks: list[Text | ToolUse]
    gate: threading.Event | None = None

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]
    scripted: bool  # whether it took a turn of the script


def _takes_all(body: dict[str, Any]) -> bool:
    return True


def with_tools(body: dict[str, Any]) -> bool:
    """A ``takes`` for an agent's main loop: only calls that offer tools take turns
    (an agent's side calls, a title or a summary, get the default answer)."""
    return bool(body.get("tools"))


@dataclass
class FakeMessagesApi:
    script: list[Turn] = field(default_factory=list)
    key: str | None = None
    default: str = "(nothing more scripted)"
    takes: Callable[[dict[str, Any]], bool] = _takes_all
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, *turns: Turn) -> None:
        with self.arrived:
            self.script.extend(turns)

    def scripted(self) -> list[Received]:
        with self.arrived:
            return [r for r in self.received if r.scripted]

    def wait_for(self, count: int, timeout: float = 60, *, scripted: bool = True) -> list[Received]:
        """Once ``count`` (scripted) requests arrived (AssertionError after ``timeout``)."""

        def seen() -> list[Received]:
            return [r for r in self.received if r.scripted or not scripted]

        with self.arrived:
            if not self.arrived.wait_for(lambda: len(seen()) >= count, timeout):
                raise AssertionError(f"{len(seen())} of {count} model calls arrived in {timeout}s")
            return seen()

    def start(self) -> FakeMessagesApi:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                path = self.path.split("?")[0]
                headers = {k.lower(): v for k, v in self.headers.items()}
                if fake.key is not None and headers.get("x-api-key") != fake.key:
                    fake._record(Received(path, headers, body, False))
                    self._json(401, _error("authentication_error", "invalid x-api-key"))
                    return
                if path.endswith("/count_tokens"):
                    fake._record(Received(path, headers, body, False))
                    self._json(200, {"input_tokens": len(raw) // 10})
                    return
                if not path.endswith("/v1/messages"):
                    fake._record(Received(path, headers, body, False))
                    self._json(404, _error("not_found_error", f"no route {path}"))
                    return
                turn, scripted = fake._next(body)
                fake._record(Received(path, headers, body, scripted))
                message = fake._message(turn, body, len(raw))
                if body.get("stream"):
                    self._stream(message, turn.gate)
                else:
                    if turn.gate is not None:
                        turn.gate.wait(60)
                    self._json(200, message)

            def do_GET(self) -> None:
                self._json(404, _error("not_found_error", "no such route"))

            def _json(self, status: int, value: object) -> None:
                data = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, message: dict[str, Any], gate: threading.Event | None) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event in _events(message):
                    data = f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                    if gate is not None and event["type"] == "message_start":
                        gate.wait(60)
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="fake-anthropic", daemon=True).start()
        return self

    def stop(self) -> None:
        with self.arrived:
            for turn in self.script:
                if turn.gate is not None:
                    turn.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # -- answers ---------------------------------------------------------------------

    def _record(self, received: Received) -> None:
        with self.arrived:
            self.received.append(received)
            self.arrived.notify_all()

    def _next(self, body: dict[str, Any]) -> tuple[Turn, bool]:
        with self.arrived:
            if self.script and self.takes(body):
                return self.script.pop(0), True
        return Turn([Text(self.default)]), False

    def _message(self, turn: Turn, body: dict[str, Any], size: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in turn.blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            else:
                tool_id = f"toolu_{next(self._ids):020d}"
                content.append({"type": "tool_use", "id": tool_id, "name": block.name, "input": block.input})
        return {
            "id": f"msg_{next(self._ids):020d}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model") or "claude-fake"),
            "content": content,
            "stop_reason": turn.stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": size // 10, "output_tokens": 7 * len(content)},
        }


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The server-sent events of a streamed ``message``, as the API sends them."""
    start = dict(message, content=[], stop_reason=None)
    start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": block["text"]},
                }
            )
        else:
            empty = dict(block, input={})
            events.append({"type": "content_block_start", "index": index, "content_block": empty})
            partial = json.dumps(block["input"])
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": partial},
                }
            )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events  # fmt: skip


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}
