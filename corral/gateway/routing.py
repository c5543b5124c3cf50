"""Which requests are for the gateway, and for which sandbox and port.

By host, under each gateway domain ``D`` (setting ``gateway_domain``, default
``localhost``, plus ``gateway_extra_domains``), one label before it:

    {port}-{sandboxId}.D        e.g. 3000-sb-0123456789abcdef.localhost
    {sandboxId}-p{port}.D       the OpenComputer SDKs' form (spec 003)
    sbx-{sandboxId}-{port}.D    xgen's form (spec 002; split at the last dash)

Every path on such a host goes to the sandbox unchanged. By path, on any host:

    /preview/{sandboxId}/{port}/{rest}     →  /{rest} (the query string kept)
    /compute/{sandboxId}/p/{port}{path}    →  {path}, "/" when empty (Copass's url_template,
                                              corral/api/copass: a session id is its sandbox's)

``/preview/{sandboxId}/{port}`` without the slash is redirected (308) to the slash
form, so relative links of the page resolve under the prefix. Path routing is for
clients that cannot pick a host name; browsers should use host routing, since every
path-routed preview shares corral's own origin (cookies, storage, scripts).

Anything else is not the gateway's (None). A gateway host or prefix whose id or port
is malformed is still the gateway's: it answers 404 like any unknown sandbox.

Every request is matched (the fast path's and the ASGI path's), so the reading of a
``Host`` header (is it a sandbox's host form, and which) is remembered per header value:
the requests of a connection, and of a page, repeat theirs. At most ``MAX_REMEMBERED_HOSTS``
values of at most ``MAX_REMEMBERED_HOST_BYTES`` each (a longer one is read every time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PREFIX = b"/preview/"
COMPUTE = re.compile(rb"^/compute/(?P<id>[^/]*)/p/(?P<port>[^/?]*)(?P<rest>/.*)?$", re.DOTALL)
_ID = r"sb-[a-z0-9]{8,32}"
_HOST_FORMS = (
    re.compile(rf"^(?P<port>[0-9]{{1,5}})-(?P<id>{_ID})$"),
    re.compile(rf"^(?P<id>{_ID})-p(?P<port>[0-9]{{1,5}})$"),
    re.compile(rf"^sbx-(?P<id>{_ID})-(?P<port>[0-9]{{1,5}})$"),
)
MAX_REMEMBERED_HOSTS = 1024
MAX_REMEMBERED_HOST_BYTES = 300  # a DNS name (253) and a port
_PATH = re.compile(rb"^/preview/(?P<id>[^/]*)/(?P<port>[^/?]*)(?P<rest>/.*)?$", re.DOTALL)
_VALID_ID = re.compile(rf"^{_ID}$")


@dataclass(frozen=True)
class Target:
    """A request for ``port`` of ``sandbox_id``: ``path`` is the raw path to send on
    (with the query string), ``prefix`` the path prefix it was found under ("" by host),
    ``host`` the Host header the client sent."""

    sandbox_id: str
    port: int  # 0 when malformed (answered 404)
    path: bytes
    prefix: str
    host: str

    @property
    def by_host(self) -> bool:
        return not self.prefix


@dataclass(frozen=True)
class Redirect:
    location: str


HostReading = tuple[str, str, int]
"""A ``Host`` header's value decoded, and the sandbox id and port of its host form ("", 0
when it is not one)."""


class Router:
    def __init__(self, domains: list[str]) -> None:
        self.suffixes = tuple("." + d.lower().strip(".") for d in domains if d.strip("."))
        self._hosts: dict[bytes, HostReading] = {}  # remembered readings (module docstring)

    def match(self, scope: Any) -> Target | Redirect | None:
        raw_host = _host(scope)
        reading = self._hosts.get(raw_host)
        if reading is None:
            reading = self._read_host(raw_host)
            if len(raw_host) <= MAX_REMEMBERED_HOST_BYTES:
                if len(self._hosts) >= MAX_REMEMBERED_HOSTS:
                    self._hosts.clear()
                self._hosts[raw_host] = reading
        host, sandbox_id, sandbox_port = reading
        if sandbox_id:
            path = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            return Target(sandbox_id, sandbox_port, _with_query(path, query), "", host)
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path.startswith(b"/compute/"):
            return _compute(raw_path, scope.get("query_string", b""), host)
        if not raw_path.startswith(PREFIX):
            return None
        found_path = _PATH.match(raw_path)
        if found_path is None:
            return Target("", 0, b"/", PREFIX.decode().rstrip("/"), host)
        sandbox_id = found_path["id"].decode("latin-1")
        port = _port(found_path["port"].decode("latin-1"))
        prefix = f"/preview/{sandbox_id}/{found_path['port'].decode('latin-1')}"
        if not _VALID_ID.match(sandbox_id):
            port = 0
        rest = found_path["rest"]
        query = scope.get("query_string", b"")
        if rest is None:
            if port == 0:
                return Target(sandbox_id, 0, b"/", prefix, host)
            return Redirect(prefix + "/" + ("?" + query.decode("latin-1") if query else ""))
        return Target(sandbox_id, port, _with_query(rest, query), prefix, host)

    def _read_host(self, raw_host: bytes) -> HostReading:
        """What ``match`` reads from a ``Host`` header's value (see ``HostReading``)."""
        host = raw_host.decode("latin-1")
        name = host.rpartition(":")[0] if host.rfind(":") > host.rfind("]") else host
        name = name.lower().rstrip(".")
        if name.endswith(self.suffixes):
            for suffix in self.suffixes:
                label = name[: -len(suffix)] if name.endswith(suffix) else "."
                if "." in label:
                    continue
                for form in _HOST_FORMS:
                    found = form.match(label)
                    if found:
                        return host, found["id"], _port(found["port"])
        return host, "", 0


def _compute(raw_path: bytes, query: bytes, host: str) -> Target:
    """A Copass gateway path; the bare per-port URL (no path) is the server's root, with
    no redirect (``session.fetch(port, "")`` follows none)."""
    found = COMPUTE.match(raw_path)
    if found is None:
        return Target("", 0, b"/", "/compute", host)
    sandbox_id = found["id"].decode("latin-1")
    port = _port(found["port"].decode("latin-1")) if _VALID_ID.match(sandbox_id) else 0
    prefix = f"/compute/{sandbox_id}/p/{found['port'].decode('latin-1')}"
    return Target(sandbox_id, port, _with_query(found["rest"] or b"/", query), prefix, host)


def _host(scope: Any) -> bytes:
    for name, value in scope["headers"]:
        if name == b"host":
            raw: bytes = value
            return raw
    return b""


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5:
        return 0
    port = int(text)
    return port if 1 <= port <= 65535 else 0


def _with_query(path: bytes, query: bytes) -> bytes:
    return path + b"?" + query if query else path
