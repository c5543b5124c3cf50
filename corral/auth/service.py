"""Authentication: API keys ``ek_<id>_<secret>`` and short-lived worker JWTs.

Contracts:
- ``authenticate_key`` raises Unauthenticated for a malformed, unknown, revoked or
  wrong key, doing the same hashing work whether or not the key id exists.
- Worker tokens (HS256) are bound to one sandbox; ``authenticate_token`` raises
  Unauthenticated for an expired, forged or ``alg: none`` token.
- ``bootstrap`` seeds the first owner key when the store has none.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import jwt

from corral.auth.principal import Principal, Role
from corral.errors import InvalidInput, Unauthenticated
from corral.ids import new_id
from corral.store.keys import ApiKey, SqlKeyStore

KEY_FORMAT = re.compile(r"^ek_([a-z0-9]{8,32})_([A-Za-z0-9]{16,128})$")
_DUMMY_HASH = hashlib.sha256(b"corral-no-such-key").hexdigest()


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    raw: str  # shown once


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def load_or_create_secret(path: Path) -> str:
    """The JWT signing secret, created once with mode 0600."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value


class AuthService:
    def __init__(self, keys: SqlKeyStore, jwt_secret: str, token_ttl_s: int = 3600) -> None:
        self.keys = keys
        self.jwt_secret = jwt_secret
        self.token_ttl_s = token_ttl_s

    async def authenticate_key(self, raw: str) -> Principal:
        match = KEY_FORMAT.match(raw.strip())
        if not match:
            raise Unauthenticated("invalid API key: expected the form ek_<id>_<secret>")
        key_id, secret = match.groups()
        key = await self.keys.get_key(key_id)
        expected = key.secret_hash if key else _DUMMY_HASH
        ok = hmac.compare_digest(hash_secret(secret), expected)
        if key is None or not ok or key.revoked_at is not None:
            raise Unauthenticated("invalid API key")
        await self.keys.mark_used(key.id)
        return Principal(org_id=key.org_id, role=Role(key.role), key_id=key.id)

    def issue_token(self, principal: Principal, sandbox_id: str) -> str:
        now = int(time.time())
        claims = {
            "sub": sandbox_id,
            "org": principal.org_id,
            "role": principal.role.value,
            "kid": principal.key_id,
            "typ": "worker",
            "iat": now,
            "exp": now + self.token_ttl_s,
        }
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def authenticate_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub", "org", "role"]},
            )
            if claims.get("typ") != "worker":
                raise Unauthenticated("invalid token: not a worker token")
            return Principal(
                org_id=str(claims["org"]),
                role=Role(claims["role"]),
                key_id=claims.get("kid"),
                sandbox_id=str(claims["sub"]),
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise Unauthenticated("invalid token") from exc

    async def create_key(self, org_id: str, role: str, name: str = "", raw: str | None = None) -> NewKey:
        try:
            role_ = Role(role)
        except ValueError as exc:
            roles = ", ".join(r.value for r in Role)
            raise InvalidInput(f"role must be one of {roles}", field="role") from exc
        if raw is None:
            key_id = new_id("k").removeprefix("k-")
            raw = f"ek_{key_id}_{secrets.token_hex(24)}"
        match = KEY_FORMAT.match(raw)
        if not match:
            raise InvalidInput("API key must look like ek_<id>_<secret>", field="api_key")
        key_id, secret = match.groups()
        key = ApiKey(
            id=key_id,
            org_id=org_id,
            role=role_.value,
            name=name,
            secret_hash=hash_secret(secret),
            created_at=datetime.now(UTC),
            last_used_at=None,
            revoked_at=None,
        )
        await self.keys.add_key(key)
        return NewKey(key, raw)

    async def bootstrap(self, seed: str | None, key_file: Path) -> str | None:
        """Seed org ``default`` and its first owner key when no key exists.

        The key is ``seed`` if given, else generated and written to ``key_file``
        (mode 0600). Returns the new raw key, or None when keys already exist.
        """
        if await self.keys.count_keys() > 0:
            return None
        org = await self.keys.add_org(new_id("org"), "default")
        new = await self.create_key(org.id, Role.OWNER.value, "bootstrap", raw=seed)
        if seed is None:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new.raw + "\n")
        return new.raw
