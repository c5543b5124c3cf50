"""Who is calling: the principal every service call carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    DEVELOPER = "developer"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    ``sandbox_id`` is set for worker tokens, which are bound to one sandbox: every
    service refuses them (NotFound) for any other sandbox.
    """

    org_id: str
    role: Role
    key_id: str | None = None
    sandbox_id: str | None = None
    client_id: str | None = None

    def may_see(self, sandbox_id: str) -> bool:
        return self.sandbox_id is None or self.sandbox_id == sandbox_id
