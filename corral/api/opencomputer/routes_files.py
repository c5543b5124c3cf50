"""File routes: read, write, list, mkdir, remove, all by ``?path=``.

Reads stream the file out as ``text/plain`` (the spec's type, whatever the bytes are);
writes stream the request body into the sandbox (never buffered whole) and answer 204.
Relative paths are taken from ``/root``. Reading a directory is a 400, so the SDKs'
``exists`` (a GET that checks for 200) is true only for files. A full disk is 507.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import FileEntryOut
from corral.auth.principal import Principal
from corral.services.files import chunks_of

log = logging.getLogger("corral.api.files")

TEXT = "text/plain; charset=utf-8"
_READ_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The file"}
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
        chunks = await stack.enter_async_context(opened)
        return StreamingResponse(
            _drain(chunks, stack), media_type=TEXT, background=BackgroundTask(stack.aclose)
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

    @r.get("/list", summary="List a directory")
    async def list_dir(
        core: CoreDep, sandbox_id: str, path: str | None = None, principal: Principal = caller
    ) -> list[FileEntryOut]:
        entries = await core.files.list(principal, sandbox_id, path)
        return [mapping.entry_out(e) for e in entries]

    @r.post("/mkdir", status_code=204, summary="Create a directory and its parents")
    async def make_dir(
        core: CoreDep, sandbox_id: str, path: str | None = None, principal: Principal = caller
    ) -> Response:
        await core.files.mkdir(principal, sandbox_id, path)
        return Response(status_code=204)

    return r


async def _drain(chunks: AsyncIterator[bytes], stack: AsyncExitStack) -> AsyncIterator[bytes]:
    """Yield the file, then close it (also when the client goes away mid-way)."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception:  # headers are sent: all we can do is cut the body short
        log.exception("reading a file failed mid-stream")
        raise
    finally:
        await stack.aclose()
