"""API key routes (corral's extension; control plane only). Need ``keys:manage``.

    POST   /keys          {role, name?}   201 {id, role, name, createdAt, ..., key}; the
                                          key is in this answer only
    GET    /keys                          the org's keys, never their secrets
    DELETE /keys/{keyId}                  204; revoking twice is fine

A role that does not exist is a 400 naming ``role``; a role above the caller's own is a
403 (an admin cannot mint owner keys); another org's key is a 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import CreatedKeyOut, CreateKeyBody, KeyOut
from corral.auth.principal import Principal


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/keys", tags=["keys"])
    caller = Depends(surface.principal)

    @r.post("", status_code=201, summary="Create an API key")
    async def create_key(core: CoreDep, body: CreateKeyBody, principal: Principal = caller) -> CreatedKeyOut:
        new = await core.keys.create(principal, body.role, body.name or "")
        return mapping.created_key_out(new)

    @r.get("", summary="List the org's API keys")
    async def list_keys(core: CoreDep, principal: Principal = caller) -> list[KeyOut]:
        return [mapping.key_out(k) for k in await core.keys.list(principal)]

    @r.delete("/{key_id}", status_code=204, summary="Revoke an API key")
    async def revoke_key(core: CoreDep, key_id: str, principal: Principal = caller) -> Response:
        await core.keys.revoke(principal, key_id)
        return Response(status_code=204)

    return r
