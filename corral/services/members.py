"""The users of an org (its members) over HTTP: list, add, change a role, remove.

Operators manage users of any org with ``corral users ...`` on the store; this service
is what an org's own principals can do over the API (the console's users page).

Contracts:
- ``list`` needs ``sandbox:read`` (every member sees who else is in the org); the rest
  need ``keys:manage`` (owners and admins), as for API keys; worker tokens never manage
  users (Forbidden).
- ``add``: InvalidInput naming ``email`` for one without an ``@`` or over 254
  characters, ``role`` for an unknown role, ``name`` over 128 characters; Forbidden for a
  role above the caller's own; Conflict naming ``email`` when the email is taken (in
  any org).
- ``set_role`` and ``remove``: NotFound for an unknown user or another org's; Forbidden
  when the user's role, or the new one, is above the caller's; a user cannot change or
  remove themself (Forbidden: another owner or admin must). The user's tokens follow at
  once (the store's revocation stamp moves: every node re-reads roles).
- Each change is recorded in the org's audit trail.
"""

from __future__ import annotations

from datetime import UTC, datetime

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, parse_role, require, require_role_at_most
from corral.domain import User
from corral.errors import Forbidden, InvalidInput, NotFound
from corral.ids import new_id
from corral.ports import KeyStore, UserStore
from corral.services.audit import AuditService

MAX_EMAIL = 254
MAX_NAME = 128


class MemberService:
    def __init__(self, users: UserStore, keys: KeyStore, audit: AuditService) -> None:
        self.users = users
        self.keys = keys
        self.audit = audit

    async def list(self, principal: Principal) -> list[User]:
        require(principal, Scope.SANDBOX_READ)
        return await self.users.list(principal.org_id)

    async def add(self, principal: Principal, email: str, role: str, name: str = "") -> User:
        _manager(principal)
        email = email.strip().lower()
        if "@" not in email or len(email) > MAX_EMAIL or any(c.isspace() for c in email):
            raise InvalidInput("email must be an email address (name@domain)", field="email")
        if len(name) > MAX_NAME:
            raise InvalidInput(f"name must be at most {MAX_NAME} characters", field="name")
        wanted = parse_role(role)
        require_role_at_most(principal, wanted)
        user = User(new_id("usr"), principal.org_id, email, name, wanted.value, datetime.now(UTC))
        await self.users.add(user)
        await self.audit.record_for(
            principal, "user_added", None, user=user.id, email=email, role=wanted.value
        )
        return user

    async def set_role(self, principal: Principal, user_id: str, role: str) -> User:
        user = await self._changeable(principal, user_id)
        wanted = parse_role(role)
        require_role_at_most(principal, wanted)
        await self.users.set_role(user.id, wanted.value)
        self.keys.stamp_revocation()
        await self.audit.record_for(
            principal, "user_role_changed", None, user=user.id, role=wanted.value, was=user.role
        )
        return User(user.id, user.org_id, user.email, user.name, wanted.value, user.created_at)

    async def remove(self, principal: Principal, user_id: str) -> None:
        user = await self._changeable(principal, user_id)
        await self.users.remove(user.id)
        self.keys.stamp_revocation()
        await self.audit.record_for(principal, "user_removed", None, user=user.id, email=user.email)

    async def _changeable(self, principal: Principal, user_id: str) -> User:
        _manager(principal)
        user = await self.users.get(user_id)
        if user is None or user.org_id != principal.org_id:
            raise NotFound(f"no user {user_id} in this org")
        if user.id == principal.user_id:
            raise Forbidden("you cannot change or remove yourself: another owner or admin must")
        require_role_at_most(principal, parse_role(user.role))
        return user


def _manager(principal: Principal) -> None:
    if principal.sandbox_id is not None:
        raise Forbidden("a worker token cannot manage users")
    require(principal, Scope.KEYS_MANAGE)
