"""A sandbox's egress policy (both mounts).

    GET /sandboxes/{id}/allowed-hosts   {sandboxID, egressAllowlist, egress}: the SDKs'
                                        allowed-hosts shape plus corral's whole policy
    PUT /sandboxes/{id}/network         {mode, allow, deny} (or {"egress": {...}}):
                                        applies at once, answers the stored policy

Entries are CIDRs, hostnames and ``*.domain`` wildcards; ``deny`` wins over ``allow``.
The host, the control plane, other sandboxes and link-local addresses stay unreachable
whatever the policy says. A malformed entry is a 400 naming it, e.g.
``egress.allow[1]: '10.0.0.0/33' is not a valid CIDR``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.schemas import AllowedHostsOut, EgressBody, EgressOut, NetworkBody
from corral.auth.principal import Principal
from corral.domain import EgressPolicy
from corral.domain.egress import parse_policy


def egress_out(policy: EgressPolicy) -> EgressOut:
    return EgressOut(mode=policy.mode.value, allow=list(policy.allow), deny=list(policy.deny))


def parse_egress(body: EgressBody, field: str = "egress") -> EgressPolicy:
    return parse_policy(body.mode, body.allow, body.deny, field=field)


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/sandboxes/{sandbox_id}")
    caller = Depends(surface.principal)

    @r.get("/allowed-hosts", summary="Read the egress policy")
    async def allowed_hosts(core: CoreDep, sandbox_id: str, principal: Principal = caller) -> AllowedHostsOut:
        policy = await core.egress.get(principal, sandbox_id)
        return AllowedHostsOut(
            sandboxID=sandbox_id, egressAllowlist=list(policy.allow), egress=egress_out(policy)
        )

    @r.put("/network", summary="Change the egress policy at runtime")
    async def set_network(
        core: CoreDep, sandbox_id: str, body: NetworkBody, principal: Principal = caller
    ) -> EgressOut:
        policy = parse_egress(body.egress or body)
        return egress_out(await core.egress.set(principal, sandbox_id, policy))

    return r
