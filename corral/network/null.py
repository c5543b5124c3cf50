"""``NullNetwork``: the ``Network`` port without a network, for tests of the layers
above (services, API, runtime wiring) that need no root.

It keeps the contract of the real adapter (id and policy validation, Conflict on a
second attach, NotFound from ``set_policy`` when not attached, idempotent ``detach``,
``reclaim``) but touches no kernel object. Its ``NetInfo`` has an empty
``netns_path`` (no namespace of ours: a runtime lets runc make a fresh one, loopback
only) and ``127.0.0.1`` as address and gateway. Tests read what was asked of it
(:attr:`NullNetwork.policies`) and inject denial events with :meth:`deny`, allowed
connections with :meth:`allow`.
"""

from __future__ import annotations

from corral import ids
from corral.domain import EgressPolicy
from corral.domain.egress import validate_policy
from corral.errors import Conflict, InvalidInput, NotFound
from corral.ports import AllowedFn, DeniedFn, NetInfo

LOOPBACK = NetInfo(netns_path="", address="127.0.0.1", gateway="127.0.0.1")


class NullNetwork:
    def __init__(self, on_denied: DeniedFn | None = None, on_allowed: AllowedFn | None = None) -> None:
        self.on_denied = on_denied
        self.on_allowed = on_allowed
        self.policies: dict[str, EgressPolicy] = {}

    async def attach(self, sandbox_id: str, policy: EgressPolicy) -> NetInfo:
        _check(sandbox_id)
        policy = validate_policy(policy)
        if sandbox_id in self.policies:
            raise Conflict(f"sandbox {sandbox_id} already has a network")
        self.policies[sandbox_id] = policy
        return LOOPBACK

    async def detach(self, sandbox_id: str) -> None:
        _check(sandbox_id)
        self.policies.pop(sandbox_id, None)

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> None:
        _check(sandbox_id)
        policy = validate_policy(policy)
        if sandbox_id not in self.policies:
            raise NotFound(f"sandbox {sandbox_id} has no network")
        self.policies[sandbox_id] = policy

    async def info(self, sandbox_id: str) -> NetInfo | None:
        _check(sandbox_id)
        return LOOPBACK if sandbox_id in self.policies else None

    async def reclaim(self, keep: set[str]) -> list[str]:
        removed = sorted(sid for sid in self.policies if sid not in keep)
        for sid in removed:
            del self.policies[sid]
        return removed

    async def deny(self, sandbox_id: str, event: dict[str, object]) -> None:
        """Deliver a denial event as the real adapter would (tests)."""
        if sandbox_id not in self.policies:
            raise NotFound(f"sandbox {sandbox_id} has no network")
        if self.on_denied is not None:
            await self.on_denied(sandbox_id, event)

    async def allow(self, sandbox_id: str, event: dict[str, object]) -> None:
        """Deliver an allowed connection as the real adapter would for a policy with
        ``audit_allowed`` (tests); nothing for another policy."""
        if sandbox_id not in self.policies:
            raise NotFound(f"sandbox {sandbox_id} has no network")
        if self.on_allowed is not None and self.policies[sandbox_id].audit_allowed:
            await self.on_allowed(sandbox_id, event)


def _check(sandbox_id: str) -> None:
    if not ids.is_valid(sandbox_id, "sb"):
        raise InvalidInput(f"not a sandbox id: {sandbox_id!r}", field="sandbox_id")
