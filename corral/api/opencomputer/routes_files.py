"""File routes: read, write, list, mkdir, remove, all by ``?path=``.

Reads stream the file out as ``text/plain`` (the spec's type, whatever the bytes are);
writes stream the request body into the sandbox (never buffered whole) and answer 204.
Relative paths are taken from ``/root``. Reading a directory is a 400, so the SDKs'
``exists`` (a GET that checks for 200) is true only for files; so is reading anything
else that is not a regular file (a device, a FIFO, a socket). A full disk is 507.

A read declares its ``Content-Length`` when the file can say (not procfs or sysfs
files) and sends exactly that; a read that fails after the status line was sent (the
file shrank, an I/O error, the agent went away) closes the connection without ending
the body, so a client always sees it fail (a short or unterminated body), never a
complete-looking 200.

Listing (``files/list``) answers the spec's bare array, in name order, at most
``limit`` entries (default and most 10,000). When more follow, the answer has the
header ``X-Next-Cursor`` (pass it back as ``?cursor=``) and a ``Link: <...>;
rel="next"``: the SDKs read only the body, so a listing never breaks them, and a
client that pages sees that it is not whole.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Send

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import FileEntryOut
from corral.auth.principal import Principal
from corral.errors import CorralError
from corral.services.files import chunks_of

log = logging.getLogger("corral.api.files")

TEXT = "text/plain; charset=utf-8"
_READ_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The file"}
}
NEXT_CURSOR = "X-Next-Cursor"
_LIST_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One page of the directory, in name order",
        "headers": {
            NEXT_CURSOR: {
                "description": "Present when more entries follow: pass it as ?cursor= for the next page",
                "schema": {"type": "string"},
            },
            "Link": {"description": 'The next page\'s URL, rel="next"', "schema": {"type": "string"}},
        },
    }
}
_WRITE_DOC: dict[str, Any] = {
    "requestBody": {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}
}


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}/files")
    caller = Depends(surface.principal)

    @r.get("", response_class=StreamingResponse, responses=_READ_DOC, summary="Read a file")
    async def read_file(
        core: CoreDep, sandbox_id: str, path: str | None = None, principal: Principal = caller
    ) -> StreamingResponse:
        opened = await core.files.read(principal, sandbox_id, path)
        stack = AsyncExitStack()
        try:
            chunks = await stack.enter_async_context(opened)
            stream = aiter(chunks)
            first = await anext(stream, b"")  # a read that fails at once is an error status
        except BaseException:
            await stack.aclose()
            raise
        headers = None if chunks.length is None else {"Content-Length": str(chunks.length)}
        return _FileResponse(
            _drain(first, stream, stack),
            media_type=TEXT,
            headers=headers,
            background=BackgroundTask(stack.aclose),
        )

    @r.put("", status_code=204, openapi_extra=_WRITE_DOC, summary="Write a file")
    async def write_file(
        core: CoreDep,
        sandbox_id: str,
        request: Request,
        path: str | None = None,
        principal: Principal = caller,
    ) -> Response:
        await core.files.write(principal, sandbox_id, path, chunks_of(request.stream()))
        return Response(status_code=204)

    @r.delete("", status_code=204, summary="Remove a file or directory")
    async def remove(
        core: CoreDep, sandbox_id: str, path: str | None = None, principal: Principal = caller
    ) -> Response:
        await core.files.remove(principal, sandbox_id, path)
        return Response(status_code=204)

    @r.get("/list", summary="List a directory", responses=_LIST_DOC)
    async def list_dir(
        core: CoreDep,
        sandbox_id: str,
        request: Request,
        response: Response,
        path: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        principal: Principal = caller,
    ) -> list[FileEntryOut]:
        entries, following = await core.files.list(principal, sandbox_id, path, cursor, limit)
        if following is not None:
            response.headers[NEXT_CURSOR] = following
            url = request.url.include_query_params(cursor=following)
            response.headers["Link"] = f'<{url}>; rel="next"'
        return [mapping.entry_out(e) for e in entries]

    @r.post("/mkdir", status_code=204, summary="Create a directory and its parents")
    async def make_dir(
        core: CoreDep, sandbox_id: str, path: str | None = None, principal: Principal = caller
    ) -> Response:
        await core.files.mkdir(principal, sandbox_id, path)
        return Response(status_code=204)

    return r


async def _drain(first: bytes, chunks: AsyncIterator[bytes], stack: AsyncExitStack) -> AsyncIterator[bytes]:
    """Yield the file, then close it (also when the client goes away mid-way)."""
    try:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
    finally:
        await stack.aclose()


class _FileResponse(StreamingResponse):
    """A streamed file whose failure after the status line is sent cuts the connection.

    The body ends with its terminating message only when the file was read whole. A
    read that fails mid-way (the file shrank, an I/O error, the agent went away) sends
    no end: the server closes the connection, so a client sees fewer bytes than the
    ``Content-Length`` or a chunked body without its last chunk, never a short 200."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                data = chunk if isinstance(chunk, bytes | memoryview) else chunk.encode(self.charset)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except CorralError as exc:
            log.warning("file read cut short, connection closed: %s: %s", type(exc).__name__, exc.message)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
