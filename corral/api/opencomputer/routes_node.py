"""Who the caller is and how the node is doing (corral's extension; control plane only).

GET /me      any credential: {orgID, orgName, role, scopes, keyID, userID, email,
             sandboxID} (what a client may show and offer: the console's buttons)
GET /node    sandbox:read: the node's figures now (``corral.services.node_stats``);
             counters since the process started, for a client to chart rates from
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import IdentityOut, NodeStatsOut
from corral.auth.principal import Principal
from corral.services import identity, node_stats


def router(surface: Surface) -> APIRouter:
    r = APIRouter(tags=["node"])
    caller = Depends(surface.principal)

    @r.get("/me", summary="Who the caller is: org, role, scopes")
    async def me(core: CoreDep, principal: Principal = caller) -> IdentityOut:
        found = await identity.describe(core.auth, principal)
        return IdentityOut(
            orgID=found.org_id,
            orgName=found.org_name,
            role=found.role,
            scopes=list(found.scopes),
            keyID=found.key_id,
            userID=found.user_id,
            email=found.email,
            sandboxID=found.sandbox_id,
        )

    @r.get("/node", summary="The node's figures now: live sandboxes, creates, memory")
    async def node(core: CoreDep, principal: Principal = caller) -> NodeStatsOut:
        stats = await node_stats.read(principal, core.metrics, core.sandboxes.store)
        return NodeStatsOut(
            at=stats.at,
            liveSandboxes=stats.live_sandboxes,
            creates=stats.creates,
            createSecondsSum=stats.create_seconds_sum,
            createSecondsCount=stats.create_seconds_count,
            memoryTotalMB=stats.memory_total_mb,
            memoryAvailableMB=stats.memory_available_mb,
            memoryPromisedMB=stats.memory_promised_mb,
        )

    return r
