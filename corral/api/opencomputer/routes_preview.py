"""Preview URL routes (control plane only, as in spec 003) and open ports (both mounts).

    POST   /sandboxes/{id}/preview          {port, domain?, authConfig?}  201, or 200 with
                                            the existing preview of that port (same
                                            settings; other settings are 409)
    GET    /sandboxes/{id}/preview          every preview URL of the sandbox
    DELETE /sandboxes/{id}/preview/{port}   204; 404 when the port has none
    POST   /sandboxes/{id}/preview/rotate   {previewAuthToken}: a new preview token, the
                                            old one stops working at once; turns preview
                                            auth on if it was off
    GET    /sandboxes/{id}/ports            corral's extension: TCP ports listening in
                                            the sandbox, [{port, hostname, url,
                                            previewId}] (previewId null without one)

``authConfig: {"public": true}`` makes a preview need no credential; without it, a
preview is served to the owner's key and to the sandbox's preview token. ``sslStatus``
is always ``"none"``: corral issues no certificates (put it behind a TLS terminator and
set ``public_url``). ``url`` is the preview's address on corral's own scheme and port.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import CreatePreviewBody, PortOut, PreviewOut, PreviewTokenOut
from corral.auth.principal import Principal


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}")
    caller = Depends(surface.principal)

    if surface.control:

        @r.post("/preview", status_code=201, summary="Create a preview URL")
        async def create_preview(
            core: CoreDep,
            sandbox_id: str,
            body: CreatePreviewBody,
            response: Response,
            principal: Principal = caller,
        ) -> PreviewOut:
            public = mapping.is_public(body.authConfig)
            link, created = await core.previews.create(
                principal, sandbox_id, body.port, domain=body.domain, public=public
            )
            if not created:
                response.status_code = 200
            return mapping.preview_out(link)

        @r.get("/preview", summary="List preview URLs")
        async def list_previews(
            core: CoreDep, sandbox_id: str, principal: Principal = caller
        ) -> list[PreviewOut]:
            return [mapping.preview_out(link) for link in await core.previews.list(principal, sandbox_id)]

        @r.post("/preview/rotate", summary="Issue a new preview token")
        async def rotate_preview_token(
            core: CoreDep, sandbox_id: str, principal: Principal = caller
        ) -> PreviewTokenOut:
            return PreviewTokenOut(previewAuthToken=await core.previews.rotate(principal, sandbox_id))

        @r.delete("/preview/{port}", status_code=204, summary="Delete a preview URL")
        async def delete_preview(
            core: CoreDep, sandbox_id: str, port: int, principal: Principal = caller
        ) -> Response:
            await core.previews.delete(principal, sandbox_id, port)
            return Response(status_code=204)

    @r.get("/ports", summary="TCP ports listening in the sandbox")
    async def open_ports(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> list[PortOut]:
        return [mapping.port_out(p) for p in await core.previews.open_ports(principal, sandbox_id)]

    return r
