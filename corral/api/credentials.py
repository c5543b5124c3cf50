"""Where a request carries its credentials, and what form each has: the one reader of
them, for every surface (through its auth module) and for the gateway.

    Authorization: Bearer <credential>     an API key, a token, or (gateway) a preview token
    X-API-Key: <API key>                   (the OpenComputer SDKs also send tokens here)
    X-OC-Preview-Token: <preview token>    the gateway's
    ?token=<t>, ?api_key=<t>               where headers cannot be set (browsers: WebSockets,
                                           preview links)
    Sec-WebSocket-Protocol: corral, corral.credential.<credential>
                                           a browser's WebSocket (``protocol``), so that a
                                           credential need not be put in a URL (the console);
                                           the server accepts with ``corral`` (``SUBPROTOCOL``)

A credential is told by its form, wherever it came: ``ek_<id>_<secret>`` is an API key
(``is_api_key``), a three-part JWT a worker or user token (``is_jwt``); anything else
is a preview token where the gateway takes one, and refused elsewhere. The forms are
``corral.auth.service``'s (``AuthService.authenticate`` decides by them), named here too
for the readers of requests.

``read(scope)`` takes them from an ASGI scope (HTTP or WebSocket) as sent, trimmed;
it judges nothing, but a request that sends one of these headers twice is refused
(InvalidInput naming the header: a 400), never decided by the first (a client may add
its caller's ``authorization`` beside its own ``Authorization``). What a place accepts,
and what its 401 says, is that place's: ``corral.api.<surface>.auth`` (through
``corral.api.authentication``), ``corral.gateway.access``. Both refuse
``X-API-Key: Bearer ...`` with ``BEARER_IN_API_KEY`` (``Credentials.require_bare_api_key``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from corral.auth import service
from corral.errors import InvalidInput, Unauthenticated

HEADERS = frozenset({b"authorization", b"x-api-key", b"x-oc-preview-token"})
"""The request headers that carry credentials (lower case, as in an ASGI scope)."""
SUBPROTOCOL = "corral"
"""The WebSocket subprotocol a server accepts a handshake with that offered a credential."""
CREDENTIAL_PROTOCOL = "corral.credential."
"""Prefix of the offered subprotocol that carries a credential (its rest)."""
is_api_key = service.is_api_key  # the forms, as AuthService.authenticate tells them
is_jwt = service.is_jwt
BEARER_IN_API_KEY = "X-API-Key takes the bare API key (ek_<id>_<secret>), without 'Bearer '"


@dataclass(frozen=True)
class Credentials:
    """A request's credentials as sent, trimmed; "" where absent."""

    authorization: str | None  # the Authorization header, whatever its scheme; None if not sent
    bearer: str  # the credential of ``Authorization: Bearer <credential>``
    api_key: str  # X-API-Key
    preview_token: str  # X-OC-Preview-Token
    protocol: str  # the credential of an offered subprotocol corral.credential.<credential>
    query_string: bytes  # as sent, for ``query``

    @property
    def key(self) -> str:
        """The API key: ``X-API-Key``, else a Bearer of the API key's form; or ""."""
        return self.api_key or (self.bearer if is_api_key(self.bearer) else "")

    def require_bare_api_key(self) -> None:
        """Unauthenticated (``BEARER_IN_API_KEY``) for ``X-API-Key: Bearer ...``."""
        if self.api_key.lower().startswith("bearer "):
            raise Unauthenticated(BEARER_IN_API_KEY)

    def query(self, name: str) -> str:
        """The query parameter ``name``, trimmed ("" if absent; see ``query_param``)."""
        return query_param(self.query_string, name).strip()


def read(scope: Any) -> Credentials:
    """The credentials of the request of ASGI ``scope`` (HTTP or WebSocket);
    InvalidInput if a credential header came twice."""
    found: dict[bytes, str] = {}
    protocol = ""
    for name, value in scope["headers"]:
        if name == b"sec-websocket-protocol":
            protocol = protocol or _protocol_credential(value.decode("latin-1"))
        elif name in HEADERS:
            if name in found:
                header = name.decode().title()
                raise InvalidInput(f"{header}: sent more than once; send one", field=header)
            found[name] = value.decode("latin-1").strip()
    authorization = found.get(b"authorization")
    scheme, _, rest = (authorization or "").partition(" ")
    return Credentials(
        authorization=authorization,
        bearer=rest.strip() if scheme.lower() == "bearer" else "",
        api_key=found.get(b"x-api-key", ""),
        preview_token=found.get(b"x-oc-preview-token", ""),
        protocol=protocol,
        query_string=scope.get("query_string", b""),
    )


def _protocol_credential(offered: str) -> str:
    """The credential of ``corral.credential.<credential>`` among the offered subprotocols."""
    for item in offered.split(","):
        item = item.strip()
        if item.startswith(CREDENTIAL_PROTOCOL):
            return item[len(CREDENTIAL_PROTOCOL) :]
    return ""


def query_param(query: bytes, name: str) -> str:
    """The first query parameter ``name`` (percent-decoded; ``+`` is kept as it is)."""
    prefix = name.encode() + b"="
    if prefix not in query:
        return ""
    for part in query.split(b"&"):
        if part.startswith(prefix):
            return unquote(part[len(prefix) :].decode("latin-1"))
    return ""


def without_query_param(query: bytes, name: str) -> bytes:
    """The query string, byte for byte, without its parameter ``name``."""
    prefix = name.encode() + b"="
    return b"&".join(p for p in query.split(b"&") if p and not p.startswith(prefix))
