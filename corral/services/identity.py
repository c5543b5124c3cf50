"""Who a principal is, as a client shows it (the console's header, what its buttons
may do): ``describe(auth, principal) -> Identity``.

Contracts: any authenticated principal may read its own identity (no scope needed);
the org's name, and for a user token the user's email, are looked up in the store;
``scopes`` are the principal's own (a narrowed token's, a worker token's), sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.auth.principal import Principal
from corral.auth.service import AuthService


@dataclass(frozen=True)
class Identity:
    org_id: str
    org_name: str
    role: str
    scopes: tuple[str, ...]
    key_id: str | None
    user_id: str | None
    email: str | None
    sandbox_id: str | None  # a worker token's one sandbox


async def describe(auth: AuthService, principal: Principal) -> Identity:
    """The identity of ``principal`` (see the module docstring)."""
    orgs = {org.id: org.name for org in await auth.keys.list_orgs()}
    email = None
    if principal.user_id is not None and auth.users is not None:
        user = await auth.users.get(principal.user_id)
        email = user.email if user is not None else None
    return Identity(
        org_id=principal.org_id,
        org_name=orgs.get(principal.org_id, principal.org_id),
        role=principal.role.value,
        scopes=tuple(sorted(scope.value for scope in principal.scopes)),
        key_id=principal.key_id,
        user_id=principal.user_id,
        email=email,
        sandbox_id=principal.sandbox_id,
    )
