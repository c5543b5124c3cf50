"""Headers on the way into a sandbox and back out.

Into the sandbox, removed: hop-by-hop headers (RFC 9110 7.6.1: ``Connection`` and the
headers it names, ``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``,
``Upgrade``, ``Proxy-*``), ``Expect`` (the server in front already answered it), and
corral's credentials: ``X-API-Key``, ``X-OC-Preview-Token``, the preview cookie, and
``Authorization`` when it carried a corral credential (an app's own ``Authorization``
on a public preview passes). The sandbox is untrusted: it never sees an owner's key.
Kept: ``Host`` as the client sent it (servers build absolute URLs from it). Set:
``X-Forwarded-For`` (the client's address appended, unless uvicorn already took the
client's address from a trusted proxy's ``X-Forwarded-For``), ``X-Forwarded-Host``,
``X-Forwarded-Proto``, and ``X-Forwarded-Prefix`` for path routing.

Out of the sandbox, removed: hop-by-hop headers, every ``Access-Control-*`` header (see
``cors``) and ``Date`` (the server in front sets its own). Cookies lose any ``Domain``
attribute, so a sandbox cannot set cookies for its siblings or for corral; on path
routes their ``Path`` is put under the prefix, and a ``Location`` that is an absolute
path is too.
"""

from __future__ import annotations

from typing import Any

COOKIE = b"corral_preview_token"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_DROPPED_IN = frozenset(
    {
        b"expect",
        b"x-api-key",
        b"x-oc-preview-token",
        b"x-forwarded-host",
        b"x-forwarded-proto",
        b"x-forwarded-prefix",
    }
)
_WEBSOCKET = frozenset(
    {
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)


def _named(value: bytes) -> frozenset[bytes]:
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


def request_headers(
    scope: Any, host: str, prefix: str, *, drop_authorization: bool, websocket: bool = False
) -> tuple[list[tuple[bytes, bytes]], bool, int]:
    """The headers to send into the sandbox, whether the client's body is chunked (sent
    without a length), and its ``Content-Length`` (0 if none)."""
    raw: list[tuple[bytes, bytes]] = scope["headers"]
    named: frozenset[bytes] = frozenset()
    for name, value in raw:
        if name == b"connection":
            named = named | _named(value)
    out: list[tuple[bytes, bytes]] = []
    forwarded_for = b""
    chunked = False
    length = 0
    for name, value in raw:
        if name in HOP_BY_HOP or name in named or name in _DROPPED_IN:
            chunked = chunked or name == b"transfer-encoding"
            continue
        if name == b"authorization" and drop_authorization:
            continue
        if name == b"cookie" and COOKIE in value:
            value = without_cookie(value)
            if not value:
                continue
        if name == b"x-forwarded-for":
            forwarded_for = value
            continue
        if websocket and name in _WEBSOCKET:
            continue
        if name == b"content-length":
            length = int(value) if value.isdigit() else 0
        out.append((name, value))
    client = scope.get("client")
    address = str(client[0]).encode() if client else b"unknown"
    if not forwarded_for:
        out.append((b"x-forwarded-for", address))
    elif forwarded_for.rsplit(b",", 1)[-1].strip() == address:  # a trusted proxy's, resolved by uvicorn
        out.append((b"x-forwarded-for", forwarded_for))
    else:
        out.append((b"x-forwarded-for", forwarded_for + b", " + address))
    out.append((b"x-forwarded-host", host.encode("latin-1")))
    out.append((b"x-forwarded-proto", b"https" if scope.get("scheme") in ("https", "wss") else b"http"))
    if prefix:
        out.append((b"x-forwarded-prefix", prefix.encode("latin-1")))
    return out, chunked, length


def response_headers(
    raw: list[tuple[bytes, bytes]], prefix: str, extra: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    """The headers to send back to the client (names lowercase), then ``extra``."""
    named: frozenset[bytes] = frozenset()
    for name, value in raw:
        if name == b"connection":
            named = named | _named(value)
    out: list[tuple[bytes, bytes]] = []
    for name, value in raw:
        if name in HOP_BY_HOP or name in named or name == b"date" or name.startswith(b"access-control-"):
            continue
        if name == b"set-cookie":
            value = scoped_cookie(value, prefix)
        elif name == b"location" and prefix and value.startswith(b"/") and not value.startswith(b"//"):
            value = prefix.encode("latin-1") + value
        out.append((name, value))
    out.extend(extra)
    return out


def without_cookie(value: bytes) -> bytes:
    """A Cookie header without the preview cookie."""
    kept = [c.strip() for c in value.split(b";") if c.strip() and c.strip().split(b"=", 1)[0] != COOKIE]
    return b"; ".join(kept)


def cookie_value(raw: list[tuple[bytes, bytes]]) -> str:
    """The preview cookie of a request, or ""."""
    for name, value in raw:
        if name == b"cookie" and COOKIE in value:
            for crumb in value.split(b";"):
                key, _, found = crumb.strip().partition(b"=")
                if key == COOKIE:
                    return found.strip(b'"').decode("latin-1")
    return ""


def scoped_cookie(value: bytes, prefix: str) -> bytes:
    """A Set-Cookie value without ``Domain``; its ``Path`` under ``prefix`` if any."""
    parts = value.split(b";")
    kept = [parts[0]]
    path = b""
    for attr in parts[1:]:
        key = attr.strip().split(b"=", 1)[0].lower()
        if key == b"domain":
            continue
        if key == b"path":
            path = attr.strip().split(b"=", 1)[1] if b"=" in attr else b"/"
            continue
        kept.append(attr)
    if prefix:
        path = prefix.encode("latin-1") + (path if path.startswith(b"/") else b"/")
    if path:
        kept.append(b" Path=" + path)
    return b";".join(kept)
