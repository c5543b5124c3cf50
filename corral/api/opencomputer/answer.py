"""The JSON answers of ``exec/run`` and ``exec/{id}/result``, encoded as they are sent.

A command's output is held as bytes (at most ``exec_output_limit`` per stream); its
JSON string is several times larger (``\\u0000`` for a NUL byte, four bytes of UTF-8
for U+FFFD standing for an invalid byte), and building it whole through pydantic and
``json.dumps`` took ~250 MB for 16 MiB of random bytes. Here the body is written in
pieces of ``CHUNK`` bytes of output each, so an answer costs its output plus one piece;
an answer whose output fits in one piece is sent whole (``answer``).

The bodies are byte for byte what FastAPI would have sent for ``ExecResultOut`` and
``ExecStatusOut`` (``json.dumps`` with ``ensure_ascii=False``, compact), plus
``"truncated": true`` when output was dropped (absent otherwise, so the spec's shape
is unchanged; the SDKs read the fields they know). ``HeldAnswer`` calls ``release``
once the body is sent or the client is gone, whichever comes first.
"""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from corral.domain import ExecResult
from corral.services.commands import AsyncExec, HeldResult

CHUNK = 64 << 10
_encode_string = json.encoder.encode_basestring


def _string(data: bytes) -> Iterator[bytes]:
    """``data`` decoded as UTF-8 (invalid bytes as U+FFFD) and written as a JSON string."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    yield b'"'
    for start in range(0, len(data), CHUNK):
        text = decoder.decode(data[start : start + CHUNK])
        if text:
            yield _encode_string(text)[1:-1].encode("utf-8")
    tail = decoder.decode(b"", final=True)
    if tail:
        yield _encode_string(tail)[1:-1].encode("utf-8")
    yield b'"'


def _object(fields: list[tuple[str, object]]) -> Iterator[bytes]:
    """A JSON object; ``bytes`` values are written as strings (``_string``)."""
    yield b"{"
    for index, (key, value) in enumerate(fields):
        yield (b"," if index else b"") + json.dumps(key).encode() + b":"
        if isinstance(value, bytes):
            yield from _string(value)
        else:
            yield json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    yield b"}"


def run_fields(result: ExecResult) -> list[tuple[str, object]]:
    fields: list[tuple[str, object]] = [
        ("exitCode", result.exit_code),
        ("stdout", result.stdout),
        ("stderr", result.stderr),
    ]
    if result.truncated:
        fields.append(("truncated", True))
    return fields


def status_fields(state: AsyncExec) -> list[tuple[str, object]]:
    result = state.result
    fields: list[tuple[str, object]] = [
        ("execId", state.id),
        ("running", state.running),
        ("exitCode", result.exit_code if result else None),
        ("stdout", result.stdout if result else b""),
        ("stderr", result.stderr if result else b""),
        ("error", state.error),
    ]
    if result is not None and result.truncated:
        fields.append(("truncated", True))
    return fields


async def _pieces(fields: list[tuple[str, object]]) -> AsyncIterator[bytes]:
    """``_object`` on the event loop (each piece is a few milliseconds of C at most).
    After each piece the loop turns: the connection's writes leave in the next turn
    (``corral.api.behind``), and only then can a slow client's full socket pause the
    sender; without the turn the whole body piled up in memory at once."""
    for piece in _object(fields):
        yield piece
        await asyncio.sleep(0)


class HeldAnswer(StreamingResponse):
    """A streamed JSON answer that calls ``release`` when it is done, sent or not."""

    def __init__(self, fields: list[tuple[str, object]], release: Callable[[], None] | None = None) -> None:
        super().__init__(_pieces(fields), media_type="application/json")
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


def answer(fields: list[tuple[str, object]], release: Callable[[], None] | None = None) -> Response:
    """The answer of ``fields``: whole when its output fits in one piece (most commands':
    a stream costs a task group and a loop turn a piece), else ``HeldAnswer``."""
    if sum(len(value) for _key, value in fields if isinstance(value, bytes)) > CHUNK:
        return HeldAnswer(fields, release)
    try:
        return Response(b"".join(_object(fields)), media_type="application/json")
    finally:
        if release is not None:
            release()  # the output is in the body now


def run_answer(held: HeldResult) -> Response:
    return answer(run_fields(held.result), held.release)


def status_answer(state: AsyncExec) -> Response:
    return answer(status_fields(state))
