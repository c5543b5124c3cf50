"""Roles, scopes, and the one check every service method starts with: ``require``.

A principal's role maps to a set of scopes; each service method names the scope it
needs and calls ``require(principal, scope)`` before anything else, so every surface,
the gateway and the CLI get the same answer (Forbidden, which surfaces render 403).
Visibility is a separate rule, applied after it: another org's resource is NotFound
(404), never Forbidden, so existence does not leak across orgs.

    scope            owner  admin  developer  viewer   what it allows
    sandbox:read       x      x       x         x      get, list, read files, list sessions, open ports
    sandbox:create     x      x       x                create sandboxes
    sandbox:write      x      x       x                timeout, write/remove files, preview URLs
    sandbox:exec       x      x       x                exec, sessions, PTYs; the gateway with a key
    sandbox:delete     x      x       x                kill sandboxes
    sessions:read      x      x       x         x      read code sessions (spec 001)
    sessions:write     x      x       x                create and delete code sessions (spec 001)
    audit:read         x      x                        the audit trail of a sandbox or the org
    keys:manage        x      x                        create, list, revoke the org's API keys
    bindings:manage    x      x                        add, list, remove the org's service bindings
    orgs:manage        x                               the org itself (users, its kill switch)

Roles are ordered owner > admin > developer > viewer; each holds every scope of the
roles below it. A principal never holds a scope its role lacks (a token may narrow its
scopes, never widen them). A worker token holds only sandbox:read, sandbox:write and
sandbox:exec, for its one sandbox (``principal.WORKER_SCOPES``). Creating a key or user needs ``keys:manage`` and a role no
higher than the caller's own.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from corral.errors import Forbidden, InvalidInput

if TYPE_CHECKING:
    from corral.auth.principal import Principal


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"

    @property
    def rank(self) -> int:
        """Higher is more powerful: viewer 0 .. owner 3."""
        return _RANK[self]


_RANK = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2, Role.OWNER: 3}


class Scope(enum.StrEnum):
    SANDBOX_READ = "sandbox:read"
    SANDBOX_CREATE = "sandbox:create"
    SANDBOX_WRITE = "sandbox:write"
    SANDBOX_EXEC = "sandbox:exec"
    SANDBOX_DELETE = "sandbox:delete"
    SESSIONS_READ = "sessions:read"
    SESSIONS_WRITE = "sessions:write"
    AUDIT_READ = "audit:read"
    KEYS_MANAGE = "keys:manage"
    BINDINGS_MANAGE = "bindings:manage"
    ORGS_MANAGE = "orgs:manage"


_VIEWER = frozenset({Scope.SANDBOX_READ, Scope.SESSIONS_READ})
_DEVELOPER = _VIEWER | {
    Scope.SANDBOX_CREATE,
    Scope.SANDBOX_WRITE,
    Scope.SANDBOX_EXEC,
    Scope.SANDBOX_DELETE,
    Scope.SESSIONS_WRITE,
}
_ADMIN = _DEVELOPER | {Scope.AUDIT_READ, Scope.KEYS_MANAGE, Scope.BINDINGS_MANAGE}
_OWNER = _ADMIN | {Scope.ORGS_MANAGE}

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.VIEWER: _VIEWER,
    Role.DEVELOPER: _DEVELOPER,
    Role.ADMIN: _ADMIN,
    Role.OWNER: _OWNER,
}


def require(principal: Principal, scope: Scope) -> None:
    """Forbidden unless ``principal`` holds ``scope``. Says which scope was missing."""
    if scope not in principal.scopes:
        what = "worker token" if principal.sandbox_id is not None else f"{principal.role.value} credential"
        raise Forbidden(f"this {what} lacks the scope {scope.value}")


def parse_role(name: str) -> Role:
    """The role called ``name``; InvalidInput naming ``role`` for any other string."""
    try:
        return Role(name)
    except ValueError as exc:
        roles = ", ".join(r.value for r in Role)
        raise InvalidInput(f"role must be one of {roles}", field="role") from exc


def require_role_at_most(principal: Principal, role: Role) -> None:
    """Forbidden when ``role`` ranks above the principal's own (no privilege escalation)."""
    if role.rank > principal.role.rank:
        raise Forbidden(f"a {principal.role.value} cannot grant the role {role.value}")
