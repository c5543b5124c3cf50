"""Who may call corral: orgs, their API keys and their users."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from corral.errors import InvalidInput

KEY_FORMAT = re.compile(r"^ek_([a-z0-9]{8,32})_([A-Za-z0-9]{16,128})$")
"""An API key as given to its caller: ``ek_<id>_<secret>``."""
KEY_SHAPE = "ek_<id>_<secret> (id: 8-32 lowercase letters and digits; secret: 16-128 letters and digits)"


def key_parts(raw: str) -> tuple[str, str]:
    """The id and secret of a key to create; InvalidInput (``api_key``) if malformed."""
    match = KEY_FORMAT.match(raw)
    if not match:
        raise InvalidInput(f"API key must look like {KEY_SHAPE}", field="api_key")
    return match[1], match[2]


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    """An org's API key; only a hash of its secret is ever kept."""

    id: str
    org_id: str
    role: str
    name: str
    secret_hash: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class User:
    """A person of an org, named by the ``sub`` of their JWTs."""

    id: str
    org_id: str
    email: str
    name: str
    role: str
    created_at: datetime
