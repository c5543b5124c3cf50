"""A sandbox's egress policy: read it, change it at runtime.

Contracts: ``get`` needs ``sandbox:read``, ``set`` needs ``sandbox:write``; another
org's sandbox is NotFound. ``set`` applies the policy to the running sandbox at once
(open connections that the new policy denies are cut) and then stores it, so a
restart, a wake or a fork gets it back. Policies arrive validated
(``corral.network.policy.parse_policy`` at the API edge).
"""

from __future__ import annotations

from dataclasses import replace

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import EgressPolicy
from corral.services.sandboxes import SandboxService


class EgressService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def get(self, principal: Principal, sandbox_id: str) -> EgressPolicy:
        require(principal, Scope.SANDBOX_READ)
        return (await self.sandboxes.visible(principal, sandbox_id)).egress

    async def set(self, principal: Principal, sandbox_id: str, policy: EgressPolicy) -> EgressPolicy:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.running(principal, sandbox_id)
        await self.sandboxes.runtime.set_egress(sandbox_id, policy)
        await self.sandboxes.store.update(replace(sandbox, egress=policy))
        return policy
