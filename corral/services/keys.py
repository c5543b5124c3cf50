"""API keys of an org, managed by its own principals (the HTTP key routes).

Operators manage keys of any org with ``corral keys ...`` on the store; this service
is what an org's owner or admin can do over the API.

Contracts:
- Every method needs ``keys:manage`` (Forbidden otherwise); worker tokens never manage
  keys (Forbidden).
- ``create``: InvalidInput naming ``role`` for an unknown role, ``name`` for a name
  over 128 characters; Forbidden for a role above the caller's own. The raw key is in
  the result once; only its hash is stored.
- ``revoke`` is idempotent; NotFound for an unknown key or another org's; Forbidden
  for a key whose role is above the caller's.
- Creating and revoking are recorded in the org's audit trail; a revocation is
  published on ``hub.key_revoked`` (caches of verified keys drop the key at once).
"""

from __future__ import annotations

from corral.auth.principal import Principal
from corral.auth.scopes import Role, Scope, parse_role, require, require_role_at_most
from corral.auth.service import AuthService, NewKey
from corral.domain import ApiKey
from corral.errors import Forbidden, InvalidInput, NotFound
from corral.services.audit import AuditKind, AuditService
from corral.services.hub import Hub

MAX_NAME = 128


class KeyService:
    def __init__(self, auth: AuthService, audit: AuditService, hub: Hub) -> None:
        self.auth = auth
        self.audit = audit
        self.hub = hub

    async def create(self, principal: Principal, role: str, name: str = "") -> NewKey:
        _manager(principal)
        wanted = parse_role(role)
        if len(name) > MAX_NAME:
            raise InvalidInput(f"name must be at most {MAX_NAME} characters", field="name")
        require_role_at_most(principal, wanted)
        new = await self.auth.create_key(principal.org_id, wanted.value, name)
        await self.audit.record_for(principal, AuditKind.KEY_CREATED, None, key=new.key.id, role=wanted.value)
        return new

    async def list(self, principal: Principal) -> list[ApiKey]:
        _manager(principal)
        return await self.auth.keys.list_keys(principal.org_id)

    async def revoke(self, principal: Principal, key_id: str) -> None:
        _manager(principal)
        key = await self.auth.keys.get_key(key_id) if len(key_id) <= 64 else None
        if key is None or key.org_id != principal.org_id:
            raise NotFound(f"key {key_id} not found")
        require_role_at_most(principal, Role(key.role))
        if key.revoked_at is None:
            await self.auth.keys.revoke(principal.org_id, key.id)
            self.hub.key_revoked.publish(key.id)
            await self.audit.record_for(principal, AuditKind.KEY_REVOKED, None, key=key.id)


def _manager(principal: Principal) -> None:
    require(principal, Scope.KEYS_MANAGE)
    if principal.sandbox_id is not None:
        raise Forbidden("a worker token cannot manage API keys")
