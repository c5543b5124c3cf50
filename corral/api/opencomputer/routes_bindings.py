"""Service binding routes (corral's extension; control plane only). Need
``bindings:manage`` (owner, admin: others get 403).

    POST   /bindings          {name, url, header, secret}   201 {name, url, header, createdAt}
    GET    /bindings                                        the org's bindings, by name
    DELETE /bindings/{name}                                 204; 404 for a name the org lacks

No answer holds a secret: it is written once and only the forwarder reads it
(``corral.services.bindings``). A bad field is a 400 naming it; a name the org already
has is a 409.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import BindingOut, CreateBindingBody
from corral.auth.principal import Principal


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/bindings", tags=["bindings"])
    caller = Depends(surface.principal)

    @r.post("", status_code=201, summary="Add a service binding")
    async def add_binding(
        core: CoreDep, body: CreateBindingBody, principal: Principal = caller
    ) -> BindingOut:
        added = await core.bindings.add(principal, body.name, body.url, body.header, body.secret)
        return mapping.binding_out(added)

    @r.get("", summary="List the org's service bindings")
    async def list_bindings(core: CoreDep, principal: Principal = caller) -> list[BindingOut]:
        return [mapping.binding_out(b) for b in await core.bindings.list(principal)]

    @r.delete("/{name}", status_code=204, summary="Remove a service binding")
    async def remove_binding(core: CoreDep, name: str, principal: Principal = caller) -> Response:
        await core.bindings.remove(principal, name)
        return Response(status_code=204)

    return r
