"""What corral serves as a sandbox's envd (port 49983 through ``E2B_SANDBOX_URL``): the
Connect RPC services ``process.Process`` and ``filesystem.Filesystem`` (connectrpc's
ASGI server with the ``e2b`` package's own generated service definitions and message
classes; JSON and binary protobuf codecs, unary and streaming calls, HTTP/1.1 and h2c
as the server in front speaks them), and envd's plain HTTP routes:

    GET  /files?path=&username=   a file's bytes (application/octet-stream, with its length)
    POST /files?path=&username=   an upload: application/octet-stream (``Content-Encoding:
                                  gzip`` allowed) to ``path``, or multipart/form-data whose
                                  ``file`` parts are named by their file names (``path`` when
                                  one); answers ``[{"name", "type": "file", "path"}]``
    GET  /health                  204
    GET  /envs                    the sandbox's envs (JSON object)

Every route is the call's caller's (``caller.Callers.of``); errors are rendered by
``errors`` (Connect codes for the services, ``{"code", "message"}`` for the rest).
"""

from __future__ import annotations

import posixpath
import zlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

from e2b.envd.filesystem.filesystem_connect import FilesystemASGIApplication
from e2b.envd.process.process_connect import ProcessASGIApplication
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from corral.api.e2b import errors
from corral.api.e2b.caller import Callers
from corral.api.e2b.filesystem import FilesystemHandler
from corral.api.e2b.process import ProcessHandler
from corral.errors import CorralError, InvalidInput, NotFound

UPLOAD_CHUNK = 256 * 1024
MAX_FORM_FILES = 100


class Envd:
    """The ASGI application of every sandbox's envd port."""

    def __init__(self, callers: Callers) -> None:
        self.callers = callers
        self.filesystem = FilesystemHandler(callers)
        interceptors = [errors.ConnectErrors()]
        self.process_app = ProcessASGIApplication(
            ProcessHandler(callers), interceptors=interceptors, codecs=errors.CODECS
        )
        self.filesystem_app = FilesystemASGIApplication(
            self.filesystem, interceptors=interceptors, codecs=errors.CODECS
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith("/process.Process/"):
            await self.process_app(scope, receive, send)
        elif path.startswith("/filesystem.Filesystem/"):
            await self.filesystem_app(scope, receive, send)
        else:
            request = Request(scope, receive)
            try:
                response = await self._http(request, path)
            except CorralError as exc:
                response = errors.answer(exc)
            await response(scope, receive, send)

    def close(self) -> None:
        self.filesystem.close()

    async def _http(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "/health" and method == "GET":
            return Response(status_code=204)
        if path == "/files" and method == "GET":
            return await self.download(request)
        if path == "/files" and method == "POST":
            return await self.upload(request)
        if path == "/envs" and method == "GET":
            caller, _ = await self.callers.of(request.headers)
            sandbox = await self.callers.core.sandboxes.get(caller.principal, caller.sandbox_id)
            return JSONResponse(sandbox.envs)
        if path in ("/health", "/files", "/envs"):
            return errors.envelope(405, f"{method} is not allowed on {path}")
        raise NotFound(f"{path} not found")

    async def download(self, request: Request) -> Response:
        caller, user = await self.callers.of(request.headers)
        target = user.path(request.query_params.get("path", ""))
        opened = await self.callers.core.files.read(caller.principal, caller.sandbox_id, target)
        stack = AsyncExitStack()  # closed after the answer, also when the client left before its body
        chunks = await stack.enter_async_context(opened)

        async def body() -> AsyncIterator[bytes]:
            async for chunk in chunks:
                yield chunk

        headers = {"content-length": str(chunks.length)} if chunks.length is not None else None
        name = posixpath.basename(target)
        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={**(headers or {}), "content-disposition": f'attachment; filename="{name}"'},
            background=BackgroundTask(stack.aclose),
        )

    async def upload(self, request: Request) -> Response:
        caller, user = await self.callers.of(request.headers)
        await self.callers.prepare(caller, user)
        owner = user.uid
        files = self.callers.core.files
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        written: list[dict[str, str]] = []
        if kind == "multipart/form-data":
            form = await request.form(max_files=MAX_FORM_FILES)
            parts = [part for _, part in form.multi_items() if isinstance(part, UploadFile)]
            if not parts:
                raise InvalidInput("the form has no file part", field="file")
            given = request.query_params.get("path")
            for part in parts:
                name = given if given and len(parts) == 1 else part.filename
                target = user.path(name or "", "path")
                await files.write(caller.principal, caller.sandbox_id, target, _read(part), owner=owner)
                written.append(_info(target))
        else:
            target = user.path(request.query_params.get("path", ""))
            body: AsyncIterator[bytes] = request.stream()
            if request.headers.get("content-encoding", "").lower() == "gzip":
                body = _gunzip(body)
            await files.write(caller.principal, caller.sandbox_id, target, body, owner=owner)
            written.append(_info(target))
        return JSONResponse(written)


def _info(path: str) -> dict[str, str]:
    return {"name": posixpath.basename(path), "type": "file", "path": path}


async def _read(part: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await part.read(UPLOAD_CHUNK):
        yield chunk


async def _gunzip(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        async for chunk in body:
            out = inflate.decompress(chunk, UPLOAD_CHUNK * 16)
            while out:
                yield out
                out = inflate.decompress(inflate.unconsumed_tail, UPLOAD_CHUNK * 16)
        if rest := inflate.flush():
            yield rest
    except zlib.error as exc:
        raise InvalidInput("the body is not valid gzip", field="Content-Encoding") from exc
