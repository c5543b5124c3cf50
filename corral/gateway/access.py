"""Who may reach a port of a sandbox through the gateway (spec 000's auth, with spec
003's preview tokens and public previews).

Credentials, wherever found (read by ``corral.api.credentials``; the cookie by
``corral.gateway.headers``):

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
   sandbox runs and the port has a preview URL. A preview pass (``PreviewService.
   browser_url``) in the token's place: the same for the one port it is of, with or
   without a preview URL.
4. Nothing: 401 (also for unknown sandboxes, so a 401 says nothing about what exists).

All 404s carry the same body and do the same work (an unknown sandbox is a cached
lookup like a known one; a token is hashed and compared either way). A token that
fails is 401 whether or not the sandbox exists. The kill switch answers 503 before
anything, globally, or once the sandbox's org is known. API-key checks are cached for
``gateway_cache_ttl_s``: a key revoked through this node stops at once, one revoked
through another process (``corral keys revoke``, another node) may keep working that
long.

``Access.decide`` is the decision, a plain function of what has been looked up;
``check`` looks up (waiting) then decides, ``check_now`` decides when nothing needs
looking up (the fast path's shortcut).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from corral.api.credentials import HEADERS, Credentials, is_api_key, is_jwt, query_param, read
from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.errors import CorralError, NotFound, Unauthenticated, Unavailable
from corral.gateway.headers import cookie_value
from corral.gateway.routing import Target
from corral.gateway.services import GatewayServices
from corral.services.previews import SandboxRoute

NOT_FOUND = "sandbox or port not found"
MISSING = (
    "missing credentials: send Authorization: Bearer <API key or preview token>, "
    "X-API-Key: <API key> or X-OC-Preview-Token: <preview token>"
)
MALFORMED = "the Authorization header must be 'Bearer <API key or preview token>'"
MAX_CACHED_KEYS = 10_000
MAX_REMEMBERED_BYTES = 1024  # of a grant's credentials (a browser's Cookie can be large)
# the request headers that carry credentials (Cookie: the preview cookie)
CREDENTIAL_HEADERS = HEADERS | {b"cookie"}
CredentialHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Grant:
    """An allowed request: where it goes, and what the forwarder must do about the
    credentials it carried."""

    route: SandboxRoute
    drop_authorization: bool  # Authorization carried a corral credential
    query_token: bool  # the preview token came as ?token=: drop it, set the cookie
    token: str  # the preview token that was accepted ("" if none)


class Access:
    def __init__(self, services: GatewayServices) -> None:
        self.services = services
        self._keys: dict[str, tuple[float, Principal]] = {}
        self._grants: dict[tuple[str, int, CredentialHeaders], tuple[Grant, SandboxRoute, float]] = {}

    def forget_key(self, key_id: str) -> None:
        """A key revoked on this node opens nothing from its next request on (subscribed
        to ``hub.key_revoked`` where the gateway is built)."""
        self._keys = {digest: entry for digest, entry in self._keys.items() if entry[1].key_id != key_id}
        self._grants.clear()  # revocations are rare: every remembered grant is decided again

    async def check(self, target: Target, scope: Any) -> Grant:
        """The grant for a request, or Unauthenticated / Forbidden / NotFound /
        Unavailable: what can only be looked up is looked up (the route, the principal
        of an API key or token), then ``decide`` decides; a hibernated sandbox the
        request may reach is woken, waiting for it, and decided on again."""
        if self.services.kill_switch.engaged():
            raise Unavailable("the gateway is switched off; retry later")
        route = await self.services.previews.route(target.sandbox_id) if target.port else None
        creds = read(scope)
        creds.require_bare_api_key()
        principal = None if _public(route, target) else await self._principal(creds)
        grant = self.decide(target, route, scope, creds, principal)
        if grant.route.hibernated:
            route = await self._awake(grant.route)
            grant = self.decide(target, route, scope, creds, principal, woken=True)
        return grant

    def check_now(self, target: Target, scope: Any, credentials: CredentialHeaders) -> Grant | None:
        """``check``'s grant when it needs no waiting: the sandbox's route is cached and
        awake, and so is the API key if one came; a worker or user token is left to
        ``check``. None otherwise, and when ``decide`` refuses (the caller then awaits
        ``check``, which answers the same). ``credentials``: the request's
        ``CREDENTIAL_HEADERS`` as they came, in order.

        A grant is remembered for the same port and credentials while what it was
        decided from stays: the same cached route (``PreviewService.forget`` and expiry
        replace it), the API key's cache entry (until it expires), no kill switch. Grants
        from a Bearer preview token or ``?token=`` are not remembered, nor those whose
        credentials (with the Cookie header) exceed ``MAX_REMEMBERED_BYTES``: at most
        ``MAX_CACHED_KEYS`` entries of at most that size."""
        route = self.services.previews.cached(target.sandbox_id)
        if route is None or route.hibernated:
            return None
        now = time.monotonic()
        memo_key = (target.sandbox_id, target.port, credentials)
        hit = self._grants.get(memo_key)
        if hit is not None and hit[1] is route and hit[2] > now:
            return None if self.services.kill_switch.engaged(route.org_id) else hit[0]
        try:
            creds = read(scope)
        except CorralError:  # a credential header twice: ``check`` refuses it
            return None
        principal, until = None, float("inf")
        if not _public(route, target):
            if creds.key:
                cached = self._keys.get(_digest(creds.key))
                if cached is None or cached[0] <= now:
                    return None
                until, principal = cached
            elif is_jwt(creds.bearer) and self._verifies(creds.bearer):
                return None  # a worker or user token: ``check`` authenticates it
        try:
            creds.require_bare_api_key()
            if self.services.kill_switch.engaged():
                return None
            grant = self.decide(target, route, scope, creds, principal)
        except CorralError:
            return None
        remembered = not grant.query_token and (not creds.bearer or is_api_key(creds.bearer))
        if remembered and sum(len(v) for _, v in credentials) <= MAX_REMEMBERED_BYTES:
            if len(self._grants) >= MAX_CACHED_KEYS:
                self._grants.clear()
            self._grants[memo_key] = (grant, route, until)
        return grant

    def decide(
        self,
        target: Target,
        route: SandboxRoute | None,
        scope: Any,
        creds: Credentials,
        principal: Principal | None,
        woken: bool = False,
    ) -> Grant:
        """The grant for a request to ``target``, decided from what is known (a plain
        function of its arguments and the kill switch): the sandbox's ``route`` (None if
        unknown), the request's ``creds`` (``scope`` for the preview cookie), and the
        ``principal`` of its API key or token (None if it has neither, or a token that
        failed: then the bearer may be a preview token). Unauthenticated, Forbidden,
        NotFound or Unavailable otherwise, in the order of the module docstring.

        A hibernated route counts as running, and its grant is to be woken (``check``
        does, then decides again with ``woken``: then it counts as running only if it
        is)."""
        if _public(route, target):
            assert route is not None
            bearer = creds.bearer
            drop = bool(bearer) and (is_api_key(bearer) or self._is_worker_token(bearer, route))
            return self._allowed(route, Grant(route, drop, False, ""))
        reachable = route is not None and (route.live or (route.hibernated and not woken))
        if principal is not None:
            if route is None or principal.org_id != route.org_id or not principal.may_see(route.sandbox_id):
                raise NotFound(NOT_FOUND)
            if not reachable:
                raise NotFound(NOT_FOUND)
            require(principal, Scope.SANDBOX_EXEC)  # Forbidden (403) for a viewer's key
            drop = not creds.key or is_api_key(creds.bearer)  # a token came as Bearer
            return self._allowed(route, Grant(route, drop, False, ""))
        token, source = _preview_token(creds, scope)
        if not token:
            raise Unauthenticated(MALFORMED if creds.authorization is not None else MISSING)
        passed = self.services.previews.pass_matches(route, target.port, token)
        if not passed and not self.services.previews.token_matches(route, token):
            raise Unauthenticated("invalid preview token")
        assert route is not None  # both are False without a route
        if not reachable or not (passed or target.port in route.previews):
            raise NotFound(NOT_FOUND)
        return self._allowed(route, Grant(route, source == "authorization", source == "query", token))

    async def _principal(self, creds: Credentials) -> Principal | None:
        """The principal of the request's API key (Unauthenticated if invalid) or token
        (None if invalid: it may be a preview token); None if it carries neither."""
        if creds.key:
            return await self._key(creds.key)
        if is_jwt(creds.bearer):
            try:
                return await self.services.auth.authenticate_token(creds.bearer)
            except Unauthenticated:
                return None  # not a worker token: maybe an (explicit) preview token
        return None

    async def _awake(self, route: SandboxRoute) -> SandboxRoute:
        """The hibernated sandbox of ``route`` woken (waiting for it), and its new route."""
        sandbox = await self.services.sandboxes.store.find(route.sandbox_id)
        if sandbox is not None:
            await self.services.hibernator.awake(sandbox)
        self.services.previews.forget(route.sandbox_id)
        return await self.services.previews.route(route.sandbox_id) or route

    def _allowed(self, route: SandboxRoute, grant: Grant) -> Grant:
        if self.services.kill_switch.engaged(route.org_id):
            raise Unavailable("the gateway is switched off for this account; retry later")
        return grant

    def _verifies(self, token: str) -> bool:
        """Whether ``token``'s signature and expiry hold."""
        try:
            self.services.auth.verify_token(token)
        except Unauthenticated:
            return False
        return True

    def _is_worker_token(self, value: str, route: SandboxRoute) -> bool:
        if not is_jwt(value):
            return False
        try:
            return self.services.auth.verify_token(value).sandbox_id == route.sandbox_id
        except Unauthenticated:
            return False

    async def _key(self, raw: str) -> Principal:
        """The principal of an API key (Unauthenticated if invalid), cached briefly."""
        digest = _digest(raw)
        now = time.monotonic()
        hit = self._keys.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self.services.auth.authenticate_key(raw)
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[digest] = (now + self.services.settings.gateway_cache_ttl_s, principal)
        return principal


def _public(route: SandboxRoute | None, target: Target) -> bool:
    """Whether ``target`` is a port of a running (or hibernated) sandbox whose preview
    needs no credential."""
    return route is not None and (route.live or route.hibernated) and target.port in route.public


def _digest(raw: str) -> str:
    """The key under which the check of API key ``raw`` is cached."""
    return hashlib.sha256(raw.encode()).hexdigest()


def _preview_token(creds: Credentials, scope: Any) -> tuple[str, str]:
    """The preview token and where it was: header, authorization, query or cookie."""
    if creds.preview_token:
        return creds.preview_token, "header"
    if creds.bearer:
        return creds.bearer, "authorization"
    query = query_param(creds.query_string, "token")
    if query:
        return query, "query"
    cookie = cookie_value(scope["headers"])
    return (cookie, "cookie") if cookie else ("", "")
