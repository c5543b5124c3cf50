"""Who may reach a port of a sandbox through the gateway (spec 000's auth, with spec
003's preview tokens and public previews).

Credentials, wherever found:

    X-API-Key: ek_...  |  Authorization: Bearer ek_...     the owner's API key
    Authorization: Bearer <worker JWT>                      a worker token of the sandbox
    X-OC-Preview-Token: <t>  |  Authorization: Bearer <t>   the sandbox's preview token
    ?token=<t>                                              the same, for browsers; the
                                                            answer sets a cookie
    Cookie: corral_preview_token=<t>                        the same (a browser's later
                                                            requests)

Decisions, in order:

1. A port with a public preview: allowed, whatever credentials come along.
2. An API key or worker token: 401 if it is not valid (a token also when the key it
   was issued to is revoked); 404 unless it is of the sandbox's org (and, for a worker
   token, of this sandbox) and the sandbox runs. Any port is allowed: the owner needs
   no preview URL (``session.fetch(port, path)`` of spec 000).
3. A preview token: 401 unless it is the sandbox's current one; then 404 unless the
   sandbox runs and the port has a preview URL.
4. Nothing: 401 (also for unknown sandboxes, so a 401 says nothing about what exists).

All 404s carry the same body and do the same work (an unknown sandbox is a cached
lookup like a known one; a token is hashed and compared either way). A token that
fails is 401 whether or not the sandbox exists. The kill switch answers 503 before
anything, globally, or once the sandbox's org is known. API-key checks are cached for
``gateway_cache_ttl_s``: a key revoked through this node stops at once, one revoked
through another process (``corral keys revoke``, another node) may keep working that
long.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.errors import CorralError, NotFound, Unauthenticated, Unavailable
from corral.gateway.headers import cookie_value
from corral.gateway.routing import Target
from corral.services.core import Core
from corral.services.previews import SandboxRoute

NOT_FOUND = "sandbox or port not found"
MISSING = (
    "missing credentials: send Authorization: Bearer <API key or preview token>, "
    "X-API-Key: <API key> or X-OC-Preview-Token: <preview token>"
)
_JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MAX_CACHED_KEYS = 10_000
MAX_REMEMBERED_BYTES = 1024  # of a grant's credentials (a browser's Cookie can be large)
# the request headers that carry credentials (Cookie: the preview cookie)
CREDENTIAL_HEADERS = frozenset({b"x-api-key", b"authorization", b"x-oc-preview-token", b"cookie"})
Credentials = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Grant:
    """An allowed request: where it goes, and what the forwarder must do about the
    credentials it carried."""

    route: SandboxRoute
    drop_authorization: bool  # Authorization carried a corral credential
    query_token: bool  # the preview token came as ?token=: drop it, set the cookie
    token: str  # the preview token that was accepted ("" if none)


class Access:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._keys: dict[str, tuple[float, Principal]] = {}
        self._grants: dict[tuple[str, int, Credentials], tuple[Grant, SandboxRoute, float]] = {}
        core.auth.keys.revoked_listeners.append(self.forget_key)

    def forget_key(self, key_id: str) -> None:
        """A key revoked on this node opens nothing from its next request on."""
        self._keys = {digest: entry for digest, entry in self._keys.items() if entry[1].key_id != key_id}
        self._grants.clear()  # revocations are rare: every remembered grant is decided again

    async def check(self, target: Target, scope: Any, creds: _Credentials | None = None) -> Grant:
        """The grant for a request, or Unauthenticated / NotFound / Unavailable;
        ``creds``: the request's credentials if already read."""
        switch = self.core.kill_switch
        if switch.engaged():
            raise Unavailable("the gateway is switched off; retry later")
        route = await self.core.previews.route(target.sandbox_id) if target.port else None
        creds = creds or _Credentials(scope)
        if route is not None and (route.live or route.hibernated) and target.port in route.public:
            route = await self._awake(route) or route
            bearer = creds.bearer
            drop = bool(bearer) and (bearer.startswith("ek_") or self._is_worker_token(bearer, route))
            return self._allowed(route, Grant(route, drop, False, ""))
        if creds.key:
            principal = await self._key(creds.key)
            route = await self._awake(route, principal)
            return self._allowed(route, self._owner(route, principal, creds.bearer.startswith("ek_")))
        if creds.bearer and _JWT.match(creds.bearer):
            try:
                principal = await self.core.auth.authenticate_token(creds.bearer)
            except Unauthenticated:
                pass  # not a worker token: maybe an (explicit) preview token
            else:
                route = await self._awake(route, principal)
                return self._allowed(route, self._owner(route, principal, True))
        token, source = creds.preview_token()
        if not token:
            raise Unauthenticated(creds.malformed or MISSING)
        if not self.core.previews.token_matches(route, token):
            raise Unauthenticated("invalid preview token")
        assert route is not None  # token_matches is False without a route
        if target.port in route.previews:
            route = await self._awake(route) or route
        if not route.live or target.port not in route.previews:
            raise NotFound(NOT_FOUND)
        grant = Grant(route, source == "authorization", source == "query", token)
        return self._allowed(route, grant)

    def check_now(self, target: Target, scope: Any, credentials: Credentials) -> Grant | None:
        """``check``'s grant when it needs no waiting: the sandbox's route is cached and
        awake, and so is the API key if one came. None otherwise, and when ``check``
        refuses (the caller then awaits ``check``, which answers the same).
        ``credentials``: the request's ``CREDENTIAL_HEADERS`` as they came, in order.

        A grant is remembered for the same port and credentials while what it was
        decided from stays: the same cached route (``PreviewService.forget`` and expiry
        replace it), the API key's cache entry (until it expires), no kill switch. Grants
        from a worker token (a JWT can expire sooner), a Bearer preview token or
        ``?token=`` are not remembered, nor those whose credentials (with the Cookie
        header) exceed ``MAX_REMEMBERED_BYTES``: at most ``MAX_CACHED_KEYS`` entries of
        at most that size."""
        route = self.core.previews.cached(target.sandbox_id)
        if route is None or route.hibernated:
            return None
        memo_key = (target.sandbox_id, target.port, credentials)
        hit = self._grants.get(memo_key)
        if hit is not None and hit[1] is route and hit[2] > time.monotonic():
            return None if self.core.kill_switch.engaged(route.org_id) else hit[0]
        try:
            creds = _Credentials(scope)
        except Unauthenticated:
            return None
        until = self._cached_until(creds.key) if creds.key else float("inf")
        if until <= time.monotonic():
            return None
        if not creds.key and _JWT.match(creds.bearer) and not self.core.auth.answers_now(creds.bearer):
            return None  # a worker token whose key or user is to be looked up
        checking = self.check(target, scope, creds)
        try:
            checking.send(None)
        except StopIteration as done:
            grant = cast(Grant, done.value)
            remembered = not grant.query_token and (not creds.bearer or creds.bearer.startswith("ek_"))
            if remembered and sum(len(v) for _, v in credentials) <= MAX_REMEMBERED_BYTES:
                if len(self._grants) >= MAX_CACHED_KEYS:
                    self._grants.clear()
                self._grants[memo_key] = (grant, route, until)
            return grant
        except CorralError:
            return None
        checking.close()  # it would wait after all: leave it to the caller's check
        return None

    def _cached_until(self, raw: str) -> float:
        """When the cached check of API key ``raw`` expires (0 if it is not cached)."""
        hit = self._keys.get(_digest(raw))
        return hit[0] if hit is not None else 0.0

    async def _awake(
        self, route: SandboxRoute | None, principal: Principal | None = None
    ) -> SandboxRoute | None:
        """A hibernated sandbox woken (waiting for it) for a request already allowed to
        reach it, and its new route; any other route as it is."""
        if route is None or not route.hibernated:
            return route
        if principal is not None and (
            principal.org_id != route.org_id or not principal.may_see(route.sandbox_id)
        ):
            return route  # _owner answers 404
        sandbox = await self.core.sandboxes.store.find(route.sandbox_id)
        if sandbox is not None:
            await self.core.lifecycle.awake(sandbox)
        self.core.previews.forget(route.sandbox_id)
        return await self.core.previews.route(route.sandbox_id) or route

    def _owner(self, route: SandboxRoute | None, principal: Principal, drop_authorization: bool) -> Grant:
        if route is None or principal.org_id != route.org_id or not principal.may_see(route.sandbox_id):
            raise NotFound(NOT_FOUND)
        if not route.live:
            raise NotFound(NOT_FOUND)
        require(principal, Scope.SANDBOX_EXEC)  # Forbidden (403) for a viewer's key
        return Grant(route, drop_authorization, False, "")

    def _allowed(self, route: SandboxRoute | None, grant: Grant) -> Grant:
        if route is not None and self.core.kill_switch.engaged(route.org_id):
            raise Unavailable("the gateway is switched off for this account; retry later")
        return grant

    def _is_worker_token(self, value: str, route: SandboxRoute) -> bool:
        if not _JWT.match(value):
            return False
        try:
            return self.core.auth.verify_token(value).sandbox_id == route.sandbox_id
        except Unauthenticated:
            return False

    async def _key(self, raw: str) -> Principal:
        """The principal of an API key (Unauthenticated if invalid), cached briefly."""
        digest = _digest(raw)
        now = time.monotonic()
        hit = self._keys.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self.core.auth.authenticate_key(raw)
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[digest] = (now + self.core.settings.gateway_cache_ttl_s, principal)
        return principal


def _digest(raw: str) -> str:
    """The key under which the check of API key ``raw`` is cached."""
    return hashlib.sha256(raw.encode()).hexdigest()


class _Credentials:
    """The credentials of one request, read once from its headers and query."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope
        self.api_key = ""
        self.bearer = ""
        self.header_token = ""
        self.malformed = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, rest = value.decode("latin-1").strip().partition(" ")
                if scheme.lower() == "bearer" and rest.strip():
                    self.bearer = rest.strip()
                else:
                    self.malformed = "the Authorization header must be 'Bearer <API key or preview token>'"
            elif name == b"x-api-key":
                self.api_key = value.decode("latin-1").strip()
                if self.api_key.lower().startswith("bearer "):
                    raise Unauthenticated(
                        "X-API-Key takes the bare API key (ek_<id>_<secret>), without 'Bearer '"
                    )
            elif name == b"x-oc-preview-token":
                self.header_token = value.decode("latin-1").strip()

    @property
    def key(self) -> str:
        """The API key the request carries (``X-API-Key``, else a Bearer ``ek_...``), or ""."""
        return self.api_key or (self.bearer if self.bearer.startswith("ek_") else "")

    def preview_token(self) -> tuple[str, str]:
        """The preview token and where it was: header, authorization, query or cookie."""
        if self.header_token:
            return self.header_token, "header"
        if self.bearer:
            return self.bearer, "authorization"
        query = query_token(self.scope.get("query_string", b""))
        if query:
            return query, "query"
        cookie = cookie_value(self.scope["headers"])
        return (cookie, "cookie") if cookie else ("", "")


def query_token(query: bytes) -> str:
    """The ``token`` query parameter (percent-decoded; ``+`` is kept as it is)."""
    if b"token=" not in query:
        return ""
    for part in query.split(b"&"):
        if part.startswith(b"token="):
            return unquote(part[6:].decode("latin-1"))
    return ""


def without_query_token(query: bytes) -> bytes:
    """The query string, byte for byte, without its ``token`` parameter."""
    return b"&".join(p for p in query.split(b"&") if p and not p.startswith(b"token="))
