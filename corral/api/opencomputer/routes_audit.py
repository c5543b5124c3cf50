"""Audit trail routes (corral's extension; control plane only). Need ``audit:read``.

    GET /sandboxes/{id}/audit   one sandbox's records (stopped sandboxes too)
    GET /audit                  the org's records; ``?sandboxID=``, ``?kind=``
                                (repeatable) and ``?actor=`` (a key id or a client
                                id) narrow them

Both page with ``?limit=`` (1..500, default 100) and ``?cursor=`` (the ``nextCursor``
of the previous page; null on the last one), newest first, or oldest first with
``?order=oldest``. There is no route that changes or removes a record.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from corral.api.opencomputer import mapping
from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import AuditPageOut
from corral.auth.principal import Principal

Order = Literal["newest", "oldest"]
Limit = Annotated[int, Query(ge=1, le=500)]


def router(surface: Surface) -> APIRouter:
    r = APIRouter(tags=["audit"])
    caller = Depends(surface.principal)

    @r.get("/sandboxes/{sandbox_id}/audit", summary="Audit trail of a sandbox")
    async def sandbox_audit(
        core: CoreDep,
        sandbox_id: str,
        limit: Limit = 100,
        cursor: str | None = None,
        order: Order = "newest",
        principal: Principal = caller,
    ) -> AuditPageOut:
        page = await core.audit.sandbox_trail(
            principal, sandbox_id, limit=limit, cursor=cursor, newest=order == "newest"
        )
        return mapping.audit_page_out(page)

    @r.get("/audit", summary="Audit trail of the org")
    async def org_audit(
        core: CoreDep,
        sandboxID: str | None = None,  # the surface's camelCase
        kind: Annotated[list[str] | None, Query()] = None,
        actor: str | None = None,  # a key id or a client id
        limit: Limit = 100,
        cursor: str | None = None,
        order: Order = "newest",
        principal: Principal = caller,
    ) -> AuditPageOut:
        page = await core.audit.org_trail(
            principal,
            sandbox_id=sandboxID,
            kinds=kind or (),
            actor=actor or None,
            limit=limit,
            cursor=cursor,
            newest=order == "newest",
        )
        return mapping.audit_page_out(page)

    return r
