"""Preview URLs, preview tokens, open ports, and the gateway's cached view of sandboxes.

A preview URL makes one port of a sandbox reachable through the gateway by others than
its owner: with the sandbox's preview token, or by anyone when the preview is public.
The owner's API key reaches every port of its sandboxes without one.

Contracts:
- ``create`` needs a running sandbox (Conflict otherwise) and a port in 1..65535
  (InvalidInput naming ``port``). It is idempotent: creating a port that already has a
  preview with the same settings returns that preview (``created`` False); with other
  settings (public or not, domain) it is a Conflict. ``domain`` must be the gateway's
  domain or one of ``gateway_extra_domains`` (InvalidInput naming ``domain``): corral
  does not verify domain ownership, so only domains the operator routes are accepted.
- ``delete`` is NotFound when the port has no preview.
- ``issue_token`` makes a preview token: ``"auto"`` (or none) is 256 random bits; an
  explicit token must be 16..256 characters of ``A-Z a-z 0-9 . _ ~ + / = -`` (so it
  fits a header, a cookie and a query string unescaped). Only its SHA-256 is stored.
- ``rotate`` replaces the token (turning preview auth on if it was off); the old one
  stops working at once on this node (the cached route is dropped).
- ``route`` is the gateway's lookup: None for an unknown sandbox; ``live`` False for a
  stopped one or one not on this node (its preview token still checks, so a holder of
  the token learns it stopped: 404, not 401). Answers are cached for ``gateway_cache_ttl_s`` (also the None ones, in a
  bounded table) and dropped on create/delete/rotate and when the sandbox stops.
- ``browser_url`` is a link a browser can open without credentials of its own (noVNC's
  ``vnc_url``, xgen's ``preview_urls``): xgen's host form ``sbx-{id}-{port}.{domain}``
  with ``?token=`` a preview pass, an HMAC of the sandbox and the port under the server's
  key (``pass_key``). The gateway takes a pass like a preview token (it becomes the
  preview cookie) but for that one port only, needing no preview URL; it works while the
  sandbox lives and, since it is derived rather than stored, is the same in every answer.
- ``open_ports`` lists the TCP ports listening inside a running sandbox (the agent's
  ``ports`` op), each with its preview URL if it has one; the xgen ``/services`` route
  and the OpenComputer ``/ports`` extension both serve it.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import Preview, Sandbox, SandboxStatus
from corral.errors import Conflict, InvalidInput, NotFound
from corral.ids import is_valid, new_id
from corral.ports import PreviewStore
from corral.services.audit import AuditKind
from corral.services.sandboxes import SandboxService
from corral.settings import Settings

TOKEN_FORM = re.compile(r"^[A-Za-z0-9._~+/=-]{16,256}$")
_NO_TOKEN = hashlib.sha256(b"corral-no-preview-token").hexdigest()
MAX_CACHED = 10_000


@dataclass(frozen=True)
class IssuedToken:
    plaintext: str  # shown once
    hash: str


@dataclass(frozen=True)
class PreviewLink:
    """A preview and where it is served: ``hostname`` (``{sandboxId}-p{port}.{domain}``)
    and ``url`` on corral's own scheme and port."""

    preview: Preview
    hostname: str
    url: str


@dataclass(frozen=True)
class OpenPort:
    port: int
    link: PreviewLink | None  # None when the port has no preview URL
    hostname: str
    url: str


@dataclass(frozen=True)
class SandboxRoute:
    """What the gateway needs to know about one running sandbox."""

    sandbox_id: str
    org_id: str
    live: bool  # running on this node
    address: str  # where its servers are reached (Runtime.address); "" unless live
    token_hash: str | None  # preview auth is on when set
    previews: frozenset[int]  # ports with a preview URL
    public: frozenset[int]  # ports whose preview needs no credential
    hibernated: bool = False  # hibernated or paused: an allowed request wakes it (corral.gateway.access)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class PreviewService:
    def __init__(
        self,
        store: PreviewStore,
        sandboxes: SandboxService,
        settings: Settings,
        pass_key: bytes | None = None,
    ) -> None:
        self.store = store
        self._pass_key = pass_key or secrets.token_bytes(32)  # given: passes outlive restarts
        self.sandboxes = sandboxes
        self.settings = settings
        self._routes: dict[str, tuple[float, SandboxRoute | None]] = {}
        self._resolving: dict[str, asyncio.Future[SandboxRoute | None]] = {}
        self._forgotten = 0  # counts forget() calls: a lookup that raced one is not cached
        parts = urlsplit(settings.base_url)
        self._scheme = parts.scheme or "http"
        default = {"http": 80, "https": 443}.get(self._scheme)
        self._port_suffix = f":{parts.port}" if parts.port and parts.port != default else ""

    # ---- preview URLs ----------------------------------------------------------------

    async def create(
        self,
        principal: Principal,
        sandbox_id: str,
        port: int,
        *,
        domain: str | None = None,
        public: bool = False,
    ) -> tuple[PreviewLink, bool]:
        """The preview, and whether it was made now (see the module docstring)."""
        require(principal, Scope.SANDBOX_WRITE)
        _check_port(port)
        domain = self._check_domain(domain)
        sandbox = await self._live(principal, sandbox_id)
        for existing in await self.store.list(sandbox.id):
            if existing.port == port:
                if existing.public != public or existing.domain != domain:
                    raise Conflict(f"port {port} already has a preview URL with other settings", field="port")
                return self.link(existing), False
        preview = Preview(
            id=new_id("pv"),
            sandbox_id=sandbox.id,
            org_id=sandbox.org_id,
            port=port,
            public=public,
            domain=domain,
            created_at=datetime.now(UTC),
        )
        await self.store.add(preview)
        self.forget(sandbox.id)
        await self.sandboxes.audit.record_for(
            principal, AuditKind.PREVIEW_OPENED, sandbox.id, port=port, public=public, domain=domain
        )
        return self.link(preview), True

    async def list(self, principal: Principal, sandbox_id: str) -> list[PreviewLink]:
        require(principal, Scope.SANDBOX_READ)
        sandbox = await self.sandboxes.get(principal, sandbox_id)
        return [self.link(p) for p in await self.store.list(sandbox.id)]

    async def delete(self, principal: Principal, sandbox_id: str, port: int) -> None:
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if not await self.store.remove(sandbox.id, port):
            raise NotFound(f"port {port} of sandbox {sandbox_id} has no preview URL")
        self.forget(sandbox.id)
        await self.sandboxes.audit.record_for(principal, AuditKind.PREVIEW_CLOSED, sandbox.id, port=port)

    def link(self, preview: Preview) -> PreviewLink:
        hostname, url = self.address_of(preview.sandbox_id, preview.port, preview.domain)
        return PreviewLink(preview, hostname, url)

    @property
    def sandbox_domain(self) -> str:
        """What the SDKs append to ``{sandboxId}-p{port}.`` to get a preview host (with
        corral's port when it is not the scheme's default)."""
        return f"{self.settings.gateway_domain}{self._port_suffix}"

    def address_of(self, sandbox_id: str, port: int, domain: str | None = None) -> tuple[str, str]:
        """Host name and URL of a port of a sandbox through the gateway."""
        hostname = f"{sandbox_id}-p{port}.{domain or self.settings.gateway_domain}"
        return hostname, f"{self._scheme}://{hostname}{self._port_suffix}/"

    def browser_url(self, sandbox_id: str, port: int) -> str:
        """The URL of ``port`` of the sandbox that admits a browser: xgen's host form,
        a preview pass as ``?token=`` (see the module docstring). InvalidInput naming
        ``port`` outside 1..65535."""
        _check_port(port)
        host = f"sbx-{sandbox_id}-{port}.{self.settings.gateway_domain}"
        return f"{self._scheme}://{host}{self._port_suffix}/?token={self.pass_for(sandbox_id, port)}"

    def pass_for(self, sandbox_id: str, port: int) -> str:
        """The preview pass of one port of a sandbox (43 URL-safe characters)."""
        mac = hmac.new(self._pass_key, f"{sandbox_id}:{port}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def pass_matches(self, route: SandboxRoute | None, port: int, token: str) -> bool:
        """Constant-time check that ``token`` is the pass of ``port`` of the sandbox of
        ``route``; the same work without a route."""
        expected = self.pass_for(route.sandbox_id if route is not None else "", port)
        return hmac.compare_digest(token.encode(), expected.encode()) and route is not None

    def _check_domain(self, domain: str | None) -> str | None:
        if domain is None or not domain.strip():
            return None
        wanted = domain.strip().lower().rstrip(".")
        allowed = [self.settings.gateway_domain, *self.settings.gateway_extra_domains]
        if wanted not in (d.lower() for d in allowed):
            raise InvalidInput(f"domain must be one of: {', '.join(allowed)}", field="domain")
        return None if wanted == self.settings.gateway_domain.lower() else wanted

    # ---- preview tokens --------------------------------------------------------------

    @staticmethod
    def issue_token(token: str | None = None, scheme: str | None = None) -> IssuedToken:
        """A new preview token, ``"auto"``/None or an explicit one (see above)."""
        if scheme is not None and scheme.lower() != "bearer":
            raise InvalidInput("previewAuth.scheme must be 'bearer'", field="previewAuth.scheme")
        if token is None or token == "auto":
            token = secrets.token_urlsafe(32)
        elif not TOKEN_FORM.match(token):
            raise InvalidInput(
                "previewAuth.token must be 'auto' or 16 to 256 characters of A-Z a-z 0-9 . _ ~ + / = -",
                field="previewAuth.token",
            )
        return IssuedToken(token, hash_token(token))

    async def rotate(self, principal: Principal, sandbox_id: str) -> str:
        """A new preview token for the sandbox; the old one stops working now."""
        require(principal, Scope.SANDBOX_WRITE)
        sandbox = await self._live(principal, sandbox_id)
        issued = self.issue_token()
        await self.store.set_token_hash(sandbox.id, issued.hash)
        self.forget(sandbox.id)
        return issued.plaintext

    @staticmethod
    def token_matches(route: SandboxRoute | None, token: str) -> bool:
        """Constant-time check of a preview token; the same work when there is no route
        or no token, so timing does not tell unknown sandboxes apart."""
        expected = route.token_hash if route is not None and route.token_hash else _NO_TOKEN
        ok = hmac.compare_digest(hash_token(token), expected)
        return ok and route is not None and route.token_hash is not None

    # ---- open ports ------------------------------------------------------------------

    async def open_ports(self, principal: Principal, sandbox_id: str) -> builtins.list[OpenPort]:
        """TCP ports listening in a running sandbox, ascending (Conflict if it is not
        running; AgentError if its agent does not answer)."""
        require(principal, Scope.SANDBOX_READ)
        agent = await self.sandboxes.processes_of(principal, sandbox_id)
        ports = await agent.ports()
        links = {p.port: self.link(p) for p in await self.store.list(sandbox_id)}
        found: builtins.list[OpenPort] = []
        for port in ports:
            link = links.get(port)
            hostname, url = (link.hostname, link.url) if link else self.address_of(sandbox_id, port)
            found.append(OpenPort(port, link, hostname, url))
        return found

    # ---- the gateway's lookup --------------------------------------------------------

    def cached(self, sandbox_id: str) -> SandboxRoute | None:
        """The cached route of ``sandbox_id``; None if none is cached (or the sandbox is
        unknown): then only ``route`` can tell."""
        hit = self._routes.get(sandbox_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def route(self, sandbox_id: str) -> SandboxRoute | None:
        """The sandbox ``sandbox_id`` as the gateway sees it (cached), or None.

        Concurrent misses for one id share one lookup. A lookup that a ``forget`` raced
        is answered but not cached, so a rotated token or a stopped sandbox is never
        cached back from before the change."""
        now = time.monotonic()
        hit = self._routes.get(sandbox_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._resolving.get(sandbox_id)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = self._resolving[sandbox_id] = asyncio.get_running_loop().create_future()
        forgotten = self._forgotten
        try:
            route = await self._resolve(sandbox_id)
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: waiters, if any, get it too
            raise
        except BaseException:  # cancelled: so are the waiters
            pending.cancel()
            raise
        finally:
            if self._resolving.get(sandbox_id) is pending:
                del self._resolving[sandbox_id]
        pending.set_result(route)
        if forgotten == self._forgotten:
            if len(self._routes) >= MAX_CACHED:
                self._evict(now)
            self._routes[sandbox_id] = (now + self.settings.gateway_cache_ttl_s, route)
        return route

    def forget(self, sandbox_id: str) -> None:
        """Drop the cached route of a sandbox (it stopped, or its previews changed)."""
        self._forgotten += 1
        self._routes.pop(sandbox_id, None)
        self._resolving.pop(sandbox_id, None)

    async def _resolve(self, sandbox_id: str) -> SandboxRoute | None:
        if not is_valid(sandbox_id, "sb"):
            return None
        sandbox = await self.sandboxes.store.find(sandbox_id)
        if sandbox is None:
            return None
        address = ""
        asleep = sandbox.status in (SandboxStatus.HIBERNATED, SandboxStatus.PAUSED)
        if sandbox.live and not asleep:
            try:
                address = await self.sandboxes.runtime.address(sandbox_id)
            except NotFound:
                pass
        previews = await self.store.list(sandbox_id)
        return SandboxRoute(
            sandbox_id=sandbox_id,
            org_id=sandbox.org_id,
            live=bool(address),
            address=address,
            token_hash=sandbox.preview_token_hash,
            previews=frozenset(p.port for p in previews),
            public=frozenset(p.port for p in previews if p.public),
            hibernated=asleep,
        )

    def _evict(self, now: float) -> None:
        for key, (expires, _) in list(self._routes.items()):
            if expires <= now:
                del self._routes[key]
        while len(self._routes) >= MAX_CACHED:  # still full: drop the oldest entries
            del self._routes[next(iter(self._routes))]

    async def _live(self, principal: Principal, sandbox_id: str) -> Sandbox:
        sandbox = await self.sandboxes.visible(principal, sandbox_id)
        if not sandbox.live:
            raise Conflict(f"sandbox {sandbox_id} is {sandbox.status.value}")
        return sandbox


def _check_port(port: int) -> None:
    if isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidInput("port must be between 1 and 65535", field="port")
