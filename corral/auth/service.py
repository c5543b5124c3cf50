"""Authentication: API keys ``ek_<id>_<secret>``, user JWTs and worker JWTs.

Contracts:
- ``authenticate`` is what every surface (through ``corral.api.authentication``) asks:
  a credential told by its form, wherever it came, ``ek_...`` an API key
  (``is_api_key``: ``authenticate_key``), a three-part JWT a token (``is_jwt``:
  ``authenticate_token``; only where the caller takes tokens); any other form is
  Unauthenticated with the caller's ``refusal`` (a surface's 401 says what it takes).
- ``authenticate_key`` raises Unauthenticated for a malformed, unknown, revoked or
  wrong key, doing the same work whether or not the key id exists: one store lookup,
  one SHA-256 of the secret, one constant-time comparison (against a dummy hash when
  there is no such key). Only a hash of each secret is stored. ``last_used_at`` is
  written at most once a minute per key and process, so a busy key does not turn
  every request into a write. A verified key is remembered for ``KEY_CACHE_S``
  seconds, by a hash of the whole raw key (so only a caller holding the key can hit
  the entry): a repeated request reads nothing from the store. A revocation through
  this process drops the key's entries at once (``forget_key``, subscribed to
  ``hub.key_revoked`` by ``corral.core``), and so
  does one by another process on the same SQLite file (the CLI): every revocation
  touches the store's ``revocations`` file, whose change time every check compares
  (one ``stat``). With a shared PostgreSQL store another control plane's revocation
  takes effect within ``KEY_CACHE_S``.
- Tokens are HS256 JWTs signed with the setting ``jwt_secret`` or, without it, the
  data dir's generated ``jwt-secret``. ``authenticate_token`` raises Unauthenticated
  for an expired, forged (another secret) or unsigned (``alg: none``) token.

  ``typ: worker``: bound to one sandbox (``sub``), made for the OpenComputer SDKs'
  worker routes; ``kid`` and ``uid`` are the key or user it was issued to.
  ``typ: user``: ``sub`` (a user id, or for a token exchanged from an API key the key
  id, also in ``kid``), ``org``, ``role``, ``exp``, and optionally ``scopes``, which
  narrows the role's scopes. A worker token's scopes are its sandbox's worker routes'
  (``principal.WORKER_SCOPES``), whoever it was issued to.
- A token is only as good as what it was issued to: ``authenticate_token`` refuses
  (Unauthenticated) one whose key (``kid``) is revoked or gone, or whose user (``uid``,
  or ``sub`` of a user token) is gone or now of another org, and a user's token acts
  with the lower of its role and the user's current one. The check is cheap: what was
  found live is remembered ``KEY_CACHE_S`` seconds, and forgotten at once with every
  revocation through this process or the store's ``revocations`` file (as for keys).
  ``verify_token`` checks only the signature and expiry (the gateway uses it to decide
  whether a header was a corral credential, never to allow anything).
- ``exchange`` is spec 002's ``POST /auth/token``: an API key for a user token.
- ``bootstrap`` seeds the first owner key when the store has none.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

from corral.auth.principal import Principal, Role
from corral.auth.scopes import Scope, parse_role
from corral.domain import ApiKey, User
from corral.domain.accounts import KEY_FORMAT, key_parts
from corral.errors import InvalidInput, NotFound, Unauthenticated
from corral.ids import new_id
from corral.ports import KeyStore, UserStore

MIN_SECRET = 32

_DUMMY_HASH = hashlib.sha256(b"corral-no-such-key").hexdigest()
TOUCH_INTERVAL_S = 60.0
_MAX_TOUCHED = 100_000
KEY_CACHE_S = 5.0
_MAX_CACHED = 10_000
WORKER, USER = "worker", "user"
API_KEY_PREFIX = "ek_"
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
NEITHER = "the credential must be an API key ek_<id>_<secret> or a JWT"


def is_api_key(value: str) -> bool:
    """Whether ``value`` has the form of an API key (not whether it is valid)."""
    return value.startswith(API_KEY_PREFIX)


def is_jwt(value: str) -> bool:
    """Whether ``value`` has the form of a JWT (a worker or user token)."""
    return JWT.match(value) is not None


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    raw: str  # shown once


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_at: datetime
    expires_in: int  # seconds


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def load_or_create_secret(path: Path) -> str:
    """The JWT signing secret, created once with mode 0600.

    It appears whole or not at all: written beside the path, then linked into place, so
    a crash leaves no half-written secret and of two processes starting together the
    second reads the first's. An empty file (left by a crash of an older corral) is
    replaced; a secret shorter than ``MIN_SECRET`` characters is refused (tokens signed
    with it could be forged): remove the file to have a new one made.
    """
    value = path.read_text().strip() if path.exists() else ""
    if not value:
        path.parent.mkdir(parents=True, exist_ok=True)
        aside = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            if path.exists():  # the empty one
                os.replace(aside, path)
            else:
                os.link(aside, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the secret
        finally:
            aside.unlink(missing_ok=True)
        value = path.read_text().strip()
    if len(value) < MIN_SECRET:
        raise InvalidInput(
            f"the JWT secret in {path} is shorter than {MIN_SECRET} characters: remove the file "
            "to have a new one made (tokens signed with the old one stop working)",
            field="jwt_secret",
        )
    return value


class AuthService:
    def __init__(
        self,
        keys: KeyStore,
        jwt_secret: str,
        token_ttl_s: int = 3600,
        user_token_ttl_s: int = 900,
        *,
        users: UserStore | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys
        self._clock = clock
        self.jwt_secret = jwt_secret
        self.token_ttl_s = token_ttl_s
        self.user_token_ttl_s = user_token_ttl_s
        self.users = users
        self._touched: dict[str, float] = {}  # key id -> monotonic time last_used_at was written
        self._live: dict[str, tuple[float, Role | None]] = {}  # kid or uid -> (until, user's role)
        self._verified: dict[bytes, tuple[float, Principal]] = {}  # hash of raw key -> (until, principal)
        self._verifying: dict[bytes, asyncio.Future[Principal]] = {}  # lookups under way, by the same hash
        self._revocations = -1  # change time of keys.revocations when the cache was last checked

    async def authenticate(
        self, credential: str, refusal: str = NEITHER, *, tokens: bool = True
    ) -> Principal:
        """The principal of an API key or (``tokens``) a JWT, told by its form;
        Unauthenticated(``refusal``) for any other form (see the module docstring)."""
        if is_api_key(credential):
            return await self.authenticate_key(credential)
        if tokens and is_jwt(credential):
            return await self.authenticate_token(credential)
        raise Unauthenticated(refusal)

    # ---- API keys ----------------------------------------------------------------------

    async def authenticate_key(self, raw: str) -> Principal:
        raw = raw.strip()
        digest = hashlib.sha256(raw.encode()).digest()  # the cache's key, not a secret check
        now = self._clock()
        self._check_revocations()
        cached = self._verified.get(digest)
        if cached is not None and cached[0] > now and cached[1].key_id is not None:
            await self._touch(cached[1].key_id)
            return cached[1]
        match = KEY_FORMAT.match(raw)
        if not match:
            raise Unauthenticated("invalid API key: expected the form ek_<id>_<secret>")
        # One lookup for all the requests that bring this key while it is looked up: a
        # burst that arrives as its cache entry has expired would otherwise make one each.
        key_id, secret = match.groups()
        verifying = self._verifying.get(digest)
        if verifying is None:
            verifying = asyncio.ensure_future(self._verify(key_id, secret, digest, now))
            self._verifying[digest] = verifying
            verifying.add_done_callback(functools.partial(self._verified_now, digest))
        return await asyncio.shield(verifying)

    async def _verify(self, key_id: str, secret: str, digest: bytes, now: float) -> Principal:
        key = await self.keys.get_key(key_id)
        expected = key.secret_hash if key else _DUMMY_HASH
        ok = hmac.compare_digest(hash_secret(secret), expected)
        if key is None or not ok or key.revoked_at is not None:
            raise Unauthenticated("invalid API key")
        await self._touch(key.id)
        principal = Principal(org_id=key.org_id, role=Role(key.role), key_id=key.id)
        if len(self._verified) >= _MAX_CACHED:
            self._verified.clear()
        self._verified[digest] = (now + KEY_CACHE_S, principal)
        return principal

    def _verified_now(self, digest: bytes, done: asyncio.Future[Principal]) -> None:
        del self._verifying[digest]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have gone meanwhile

    def _check_revocations(self) -> None:
        """Forget every verified key when another process revoked one (see above)."""
        stamp = self.keys.revocations
        if stamp is None:
            return
        try:
            changed = os.stat(stamp).st_mtime_ns
        except FileNotFoundError:
            changed = 0
        if changed != self._revocations:
            self._verified.clear()
            self._live.clear()
            self._revocations = changed

    def forget_key(self, key_id: str) -> None:
        """Drop what ``authenticate_key`` remembers of ``key_id`` (it was revoked)."""
        self._verified = {d: entry for d, entry in self._verified.items() if entry[1].key_id != key_id}
        self._live.pop(key_id, None)

    async def _touch(self, key_id: str) -> None:
        now = self._clock()
        last = self._touched.get(key_id)
        if last is not None and now - last < TOUCH_INTERVAL_S:
            return
        if len(self._touched) >= _MAX_TOUCHED:
            self._touched.clear()
        self._touched[key_id] = now
        await self.keys.mark_used(key_id)

    async def create_key(self, org_id: str, role: str, name: str = "", raw: str | None = None) -> NewKey:
        """A new key of ``org_id``; InvalidInput naming ``role`` for an unknown role."""
        role_ = parse_role(role)
        if raw is None:
            key_id = new_id("k").removeprefix("k-")
            raw = f"ek_{key_id}_{secrets.token_hex(24)}"
        key_id, secret = key_parts(raw)
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

    # ---- tokens ------------------------------------------------------------------------

    def issue_token(self, principal: Principal, sandbox_id: str) -> str:
        """A worker token of ``sandbox_id`` for ``principal`` (valid ``token_ttl_s``),
        never holding a scope ``principal`` lacks (``scopes`` when it was narrowed)."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": sandbox_id,
            "org": principal.org_id,
            "role": principal.role.value,
            "kid": principal.key_id,
            "uid": principal.user_id,
            "typ": WORKER,
            "iat": now,
            "exp": now + self.token_ttl_s,
        }
        if principal.granted is not None:  # a narrowed caller mints no more than it holds
            claims["scopes"] = sorted(s.value for s in principal.scopes)
        return jwt.encode(claims, self.jwt_secret, algorithm="HS256")

    def issue_user_token(self, user: User | Principal, ttl_s: int | None = None) -> IssuedToken:
        """A user token for a user, or for the key a principal authenticated with."""
        ttl = self.user_token_ttl_s if ttl_s is None else ttl_s
        now = int(time.time())
        claims: dict[str, Any] = {"typ": USER, "iat": now, "exp": now + ttl}
        if isinstance(user, User):
            claims.update(sub=user.id, org=user.org_id, role=user.role)
        else:
            if user.key_id is None:
                raise InvalidInput("only an API key can be exchanged for a token", field="api_key")
            claims.update(sub=user.key_id, kid=user.key_id, org=user.org_id, role=user.role.value)
            if user.granted is not None:
                claims["scopes"] = sorted(s.value for s in user.scopes)
        token = jwt.encode(claims, self.jwt_secret, algorithm="HS256")
        return IssuedToken(token, datetime.fromtimestamp(now + ttl, UTC), ttl)

    async def exchange(self, api_key: str) -> IssuedToken:
        """Spec 002's exchange: a valid API key for a user token (Unauthenticated otherwise)."""
        return self.issue_user_token(await self.authenticate_key(api_key))

    async def authenticate_token(self, token: str) -> Principal:
        """A valid token's principal (see the module docstring); Unauthenticated otherwise."""
        principal = self.verify_token(token)
        self._check_revocations()
        subject = principal.key_id or principal.user_id
        if subject is None:
            return principal  # issued by nothing revocable (not minted by corral today)
        now = self._clock()
        hit = self._live.get(subject)
        if hit is None or hit[0] <= now:
            hit = (now + KEY_CACHE_S, await self._current_role(principal))
            if len(self._live) >= _MAX_CACHED:
                self._live.clear()
            self._live[subject] = hit
        role = hit[1]
        if role is not None and role.rank < principal.role.rank:
            principal = replace(principal, role=role)
        return principal

    def answers_now(self, token: str) -> bool:
        """Whether ``authenticate_token`` answers ``token`` without reading the store
        (what it was issued to was found live moments ago, or it is invalid anyway)."""
        try:
            principal = self.verify_token(token)
        except Unauthenticated:
            return True
        self._check_revocations()
        subject = principal.key_id or principal.user_id
        hit = self._live.get(subject) if subject else None
        return subject is None or (hit is not None and hit[0] > self._clock())

    async def _current_role(self, principal: Principal) -> Role | None:
        """None for a key that is live; a user's current role; Unauthenticated when the
        key or user the token was issued to is revoked, gone or of another org."""
        if principal.key_id is not None:
            key = await self.keys.get_key(principal.key_id)
            if key is None or key.revoked_at is not None or key.org_id != principal.org_id:
                raise Unauthenticated("token revoked: the API key it was issued to is revoked")
            return None
        assert principal.user_id is not None
        user = await self.users.get(principal.user_id) if self.users is not None else None
        if user is None or user.org_id != principal.org_id:
            raise Unauthenticated("token revoked: the user it was issued to is gone")
        return parse_role(user.role)

    def verify_token(self, token: str) -> Principal:
        """The principal a token names if its signature and expiry hold; nothing more."""
        try:
            claims = jwt.decode(
                token,
                self.jwt_secret,
                algorithms=["HS256"],
                options={"require": ["exp", "sub", "org", "role"]},
            )
            kind = claims.get("typ")
            if kind == WORKER:
                return Principal(
                    org_id=str(claims["org"]),
                    role=Role(claims["role"]),
                    key_id=claims.get("kid"),
                    user_id=claims.get("uid"),
                    sandbox_id=str(claims["sub"]),
                    granted=_scopes(claims.get("scopes")),
                )
            if kind == USER:
                key_id = claims.get("kid")
                return Principal(
                    org_id=str(claims["org"]),
                    role=Role(claims["role"]),
                    key_id=str(key_id) if key_id else None,
                    user_id=None if key_id else str(claims["sub"]),
                    granted=_scopes(claims.get("scopes")),
                )
            raise Unauthenticated("invalid token: unknown token type")
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise Unauthenticated("invalid token") from exc

    # ---- first start -------------------------------------------------------------------

    async def bootstrap(self, seed: str | None, key_file: Path) -> str | None:
        """Seed org ``default`` and its first owner key when no key exists.

        The key is ``seed`` if given (checked before anything is written), else
        generated and written to ``key_file`` (mode 0600). Returns the new raw key, or
        None when keys already exist. A start that stopped after the org was written
        and before its key (a crash) reuses that org.
        """
        if await self.keys.count_keys() > 0:
            return None
        if seed is not None:
            key_parts(seed)  # a malformed seed is refused before anything is written
        try:  # a start that failed between the two writes left the org: it is reused
            org = await self.keys.org_by_name("default")
        except NotFound:
            org = await self.keys.add_org(new_id("org"), "default")
        new = await self.create_key(org.id, Role.OWNER.value, "bootstrap", raw=seed)
        if seed is None:
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(new.raw + "\n")
        return new.raw


def _scopes(claim: object) -> frozenset[Scope] | None:
    """A token's ``scopes`` claim: None when absent; unknown names are dropped."""
    if claim is None:
        return None
    if not isinstance(claim, list):
        raise TypeError("scopes must be a list")
    known = {s.value for s in Scope}
    return frozenset(Scope(name) for name in claim if isinstance(name, str) and name in known)
