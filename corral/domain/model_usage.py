"""What one call of the Anthropic Messages API used, read from its answer.

``ModelUsage``: the model named in the answer, tokens in (``input_tokens`` plus the
cache's ``cache_creation_input_tokens`` and ``cache_read_input_tokens``) and out.
``UsageReader`` reads it from an answer fed chunk by chunk as it passes, either a JSON
body or a stream of server-sent events (``message_start`` holds the input tokens,
each ``message_delta`` the output tokens so far), gzip- or deflate-encoded or not.
It never raises on what it is fed: an answer it cannot read (another encoding,
malformed) reads as no usage, and it keeps at most ``MAX_HELD`` bytes of an unfinished
line or JSON body (beyond: no usage).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

MAX_HELD = 4 * 1024 * 1024


@dataclass(frozen=True)
class ModelUsage:
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


def usage_of(answer: object) -> ModelUsage:
    """The usage of a non-streamed answer (a parsed JSON object); zeros if it has none."""
    if not isinstance(answer, dict):
        return ModelUsage()
    model = answer.get("model")
    counts = answer.get("usage")
    return ModelUsage(
        model if isinstance(model, str) else "", _inputs(counts), _count(counts, "output_tokens")
    )


class UsageReader:
    def __init__(self, content_type: str = "", content_encoding: str = "") -> None:
        self.streamed = content_type.split(";")[0].strip().lower() == "text/event-stream"
        encoding = content_encoding.strip().lower()
        self._inflate = zlib.decompressobj(47) if encoding in ("gzip", "deflate") else None
        self._broken = encoding not in ("", "identity", "gzip", "deflate")
        self._held = b""
        self._model = ""
        self._input = 0
        self._output = 0

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        if self._inflate is not None:
            try:
                chunk = self._inflate.decompress(chunk)
            except zlib.error:
                self._broken = True
                return
        self._held += chunk
        if self.streamed:
            *lines, self._held = self._held.split(b"\n")
            for line in lines:
                self._event_line(line)
        if len(self._held) > MAX_HELD:
            self._broken = True
            self._held = b""

    def usage(self) -> ModelUsage:
        """What the answer fed so far says (call once it has ended)."""
        if self._broken:
            return ModelUsage()
        if not self.streamed:
            try:
                return usage_of(json.loads(self._held))
            except ValueError:
                return ModelUsage()
        return ModelUsage(self._model, self._input, self._output)

    def _event_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        try:
            event = json.loads(line[5:])
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            message = event["message"]
            model = message.get("model")
            self._model = model if isinstance(model, str) else self._model
            self._input += _inputs(message.get("usage"))
            self._output = max(self._output, _count(message.get("usage"), "output_tokens"))
        elif event.get("type") == "message_delta":
            self._output = max(self._output, _count(event.get("usage"), "output_tokens"))


def _inputs(counts: object) -> int:
    return sum(
        _count(counts, name)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


def _count(counts: object, name: str) -> int:
    value = counts.get(name) if isinstance(counts, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
