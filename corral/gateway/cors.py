"""corral's own CORS policy for responses of servers in sandboxes.

Servers in sandboxes do not decide who may read them cross-origin: the gateway drops
every ``Access-Control-*`` header they send, so a dev server that reflects ``*`` cannot
open a sandbox to any web page. Instead, the setting ``gateway_cors_origins`` lists the
origins allowed (exact ``scheme://host[:port]``; ``"*"`` allows any origin, without
credentials). The default allows none: only same-origin pages, which need no CORS.

Preflights (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) are
answered by the gateway itself, without credentials (browsers send none) and without
asking the sandbox: 204 with the allow headers for an allowed origin, 204 without them
otherwise (the browser then refuses). The answer is the same whether or not the sandbox
exists, so preflights tell a prober nothing.
"""

from __future__ import annotations

PREFLIGHT_MAX_AGE = b"600"


class CorsPolicy:
    def __init__(self, origins: list[str]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(o.rstrip("/").lower().encode() for o in origins if o != "*")

    def allows(self, origin: bytes) -> bool:
        return bool(origin) and (self.any or origin.lower() in self.origins)

    def response_headers(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        """Headers to add to a response to a request from ``origin`` (maybe none)."""
        if not self.allows(origin):
            return []
        if origin.lower() in self.origins:
            return [
                (b"access-control-allow-origin", origin),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        return [(b"access-control-allow-origin", b"*")]

    def preflight_headers(self, origin: bytes, method: bytes, headers: bytes) -> list[tuple[bytes, bytes]]:
        """The headers of the gateway's 204 answer to a preflight."""
        found = self.response_headers(origin)
        if not found:
            return [(b"vary", b"Origin")]
        found.append((b"access-control-allow-methods", method or b"GET"))
        if headers:
            found.append((b"access-control-allow-headers", headers))
        found.append((b"access-control-max-age", PREFLIGHT_MAX_AGE))
        return found
