"""Who is calling: the principal every service call carries.

A principal is an org, a role, and the scopes that role grants (``corral.auth.scopes``
has the table), plus where it came from: the API key (``key_id``), the user of a user
JWT (``user_id``), the one sandbox a worker token is bound to (``sandbox_id``) and the
client's own label (``client_id``, the ``X-Client-Id`` header), which the audit trail
records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.auth.scopes import ROLE_SCOPES, Role, Scope

__all__ = ["WORKER_SCOPES", "Principal", "Role", "Scope"]

# What the worker routes of one sandbox need (get, exec, files, PTYs, ports, network,
# timeout, keepalive, token refresh): a worker token holds these and nothing more.
WORKER_SCOPES = frozenset({Scope.SANDBOX_READ, Scope.SANDBOX_WRITE, Scope.SANDBOX_EXEC})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``sandbox_id`` is set for worker tokens, which are bound to one sandbox: every
    service refuses them (NotFound) for any other sandbox. ``scopes`` are the role's,
    narrowed to ``granted`` when a token names its own (never widened past the role),
    and for a worker token to ``WORKER_SCOPES``, what its sandbox's worker routes need
    (no creates, kills, keys, audit or templates, whatever the role of its issuer).
    """

    org_id: str
    role: Role
    key_id: str | None = None
    sandbox_id: str | None = None
    client_id: str | None = None
    user_id: str | None = None
    granted: frozenset[Scope] | None = None  # None: every scope of the role
    scopes: frozenset[Scope] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        role_scopes = ROLE_SCOPES[self.role]
        scopes = role_scopes if self.granted is None else self.granted & role_scopes
        if self.sandbox_id is not None:
            scopes &= WORKER_SCOPES
        object.__setattr__(self, "scopes", scopes)

    def as_developer(self) -> Principal:
        """Corral acting for this caller's org, on its key or user (the audit trail
        names them), with a developer's scopes: what a surface whose callers hold a
        narrower scope (``sessions:write``) uses for the sandbox calls it makes for
        them."""
        return Principal(
            org_id=self.org_id,
            role=Role.DEVELOPER,
            key_id=self.key_id,
            user_id=self.user_id,
            client_id=self.client_id,
        )

    def may_see(self, sandbox_id: str) -> bool:
        return self.sandbox_id is None or self.sandbox_id == sandbox_id

    @property
    def subject(self) -> str:
        """Who this is for rate limits and logs: ``key:<id>``, ``user:<id>`` or ``org:<id>``."""
        if self.key_id:
            return f"key:{self.key_id}"
        if self.user_id:
            return f"user:{self.user_id}"
        return f"org:{self.org_id}"
