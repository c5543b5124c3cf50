"""Service bindings: an upstream an org's sandboxes may call without holding its secret.

An operator defines a binding per org: a ``name``, the upstream's base ``url`` (http or
https), and the ``header`` and ``secret`` corral adds to every request it forwards
there (DESIGN.md decision 8). A sandbox that opened the binding calls the forwarder on
its bridge (``corral.network.forwarder``); the secret stays on the host.

``Binding`` never prints its secret (``repr`` leaves it out); every public view of a
binding (API, CLI) is built from the other fields. ``binding`` validates what an
operator gives: InvalidInput naming ``name``, ``url``, ``header`` or ``secret``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from corral.errors import InvalidInput

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
NAME_SHAPE = "1 to 63 lowercase letters, digits or '_', starting with a letter"
HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")  # an RFC 9110 token
SECRET = re.compile(
    r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
)  # visible ASCII and spaces: one header value
MAX_URL = 2048
MAX_SECRET = 8192
# Headers the forwarder itself owns: a binding cannot set them.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "expect",
    }
)


@dataclass(frozen=True)
class Binding:
    """One binding of an org. ``url`` has no trailing slash; ``header`` is as given."""

    org_id: str
    name: str
    url: str
    header: str
    secret: str = field(repr=False)
    created_at: datetime
    metered: bool = False  # a model API: the forwarder reads each answer's token usage


def binding(org_id: str, name: str, url: str, header: str, secret: str, created_at: datetime) -> Binding:
    """A valid ``Binding`` from what an operator gave (see the module docstring)."""
    check_name(name)
    if len(url) > MAX_URL:
        raise InvalidInput(f"url must be at most {MAX_URL} characters", field="url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url must be an http:// or https:// URL with a host", field="url")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url must not hold credentials: the secret goes in the header", field="url")
    if parts.query or parts.fragment or not url.isprintable() or " " in url:
        raise InvalidInput("url is a base URL: no query, fragment or spaces", field="url")
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError as exc:
        raise InvalidInput(f"url has a bad port: {exc}", field="url") from exc
    if not HEADER.match(header) or header.lower() in RESERVED_HEADERS:
        raise InvalidInput("header must be an HTTP header name corral does not set itself", field="header")
    if len(secret) > MAX_SECRET or not SECRET.match(secret):
        raise InvalidInput(
            f"secret must be 1 to {MAX_SECRET} visible ASCII characters (one header value)", field="secret"
        )
    return Binding(org_id, name, url.rstrip("/"), header, secret, created_at)


def check_name(name: str, field: str = "name") -> str:
    """``name`` if it is a binding's name; InvalidInput naming ``field`` otherwise."""
    if not NAME.match(name):
        raise InvalidInput(f"a binding name is {NAME_SHAPE}", field=field)
    return name
