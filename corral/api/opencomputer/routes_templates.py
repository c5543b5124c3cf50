"""Template routes (control plane only): templates built from Dockerfiles.

    POST   /templates          {name, dockerfile, tag?}   201 template (ready or failed);
                                                          with Accept: text/event-stream,
                                                          200 and a stream of events
    GET    /templates                                     built-in templates, then the org's
    GET    /templates/{name}                              404 for an unknown name (another
                                                          org's templates are unknown)
    DELETE /templates/{name}                              204; 409 for a built-in or used one

The stream (what the SDKs' ``parse_sse_stream`` reads): ``build_log`` events
``{"step", "type": "log", "message"}`` for each line of the builder's output,
then ``result`` (the template) or ``error`` (``{"error": "..."}``), then the end. A
comment line is sent every 15 s of silence so proxies keep the connection. The build
goes on if the client goes away.

What a Dockerfile may do (``corral.runtime.dockerfile``): ``FROM`` a corral template
(``base``, ``python``, ``nodejs``, or one the org built: names are per org) or an image
of a registry the node reaches; ``RUN``, ``ENV``, ``WORKDIR``, ``USER``, ``ARG``, ... as in Docker.
The build context is empty: ``COPY``/``ADD`` take inline content from heredocs
(``COPY <<EOF /path``) or files of another stage (``--from=``); ``RUN`` heredocs work.
Sandboxes made from the template get its ``ENV`` (under their own ``envs``), start in
its ``WORKDIR``, and run commands as its ``USER`` (file operations of the API stay
root's). A template must have ``python3`` (corral's agent runs on it).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import BuildTemplateBody, TemplateOut
from corral.api.status import message_of
from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import BuildStatus, TemplateBuild
from corral.errors import CorralError

KEEPALIVE_S = 15.0
_STEP = re.compile(r"^STEP (\d+)/\d+")


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/templates")
    if not surface.control:
        return r
    caller = Depends(surface.principal)

    @r.post(
        "",
        status_code=201,
        summary="Build a template from a Dockerfile",
        response_model=TemplateOut,
        description="Waits for the build; `status` is `ready`, or `failed` with `error`. Send "
        "`Accept: text/event-stream` for `build_log`, `result` and `error` events instead.",
    )
    async def build_template(
        core: CoreDep, request: Request, body: BuildTemplateBody, principal: Principal = caller
    ) -> Response | TemplateOut:
        if "text/event-stream" in request.headers.get("accept", ""):
            await core.template_builds.check(principal, body.name, body.dockerfile, body.tag)
            return StreamingResponse(
                _stream(core, principal, body),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        task = asyncio.ensure_future(
            core.template_builds.build(principal, body.name, body.dockerfile, body.tag)
        )
        return mapping.template_out(await asyncio.shield(task))

    @r.get("", summary="List templates")
    async def list_templates(core: CoreDep, principal: Principal = caller) -> list[TemplateOut]:
        return [mapping.template_out(t) for t in await core.template_builds.list(principal)]

    @r.get("/{name}", summary="Get a template")
    async def get_template(core: CoreDep, name: str, principal: Principal = caller) -> TemplateOut:
        return mapping.template_out(await core.template_builds.get(principal, name))

    @r.delete("/{name}", status_code=204, summary="Delete a template")
    async def delete_template(core: CoreDep, name: str, principal: Principal = caller) -> Response:
        await core.template_builds.delete(principal, name)
        return Response(status_code=204)

    return r


async def _stream(core: Core, principal: Principal, body: BuildTemplateBody) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[str | None] = asyncio.Queue()
    step = 0

    def log(line: str) -> None:
        queue.put_nowait(line)

    async def run() -> TemplateBuild:
        try:
            return await core.template_builds.build(principal, body.name, body.dockerfile, body.tag, log)
        finally:
            queue.put_nowait(None)

    task = asyncio.ensure_future(run())  # not cancelled with the response: the build finishes
    while True:
        try:
            line = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
        except TimeoutError:
            yield b": building\n\n"
            continue
        if line is None:
            break
        if found := _STEP.match(line):
            step = int(found.group(1))
        yield _event("build_log", {"step": step, "type": "log", "message": line})
    try:
        built = await task
    except CorralError as exc:
        yield _event("error", {"error": message_of(exc)})
        return
    if built.status is BuildStatus.FAILED:
        yield _event("error", {"error": built.error or "the build failed"})
        return
    yield _event("result", mapping.template_out(built).model_dump())


def _event(kind: str, data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
