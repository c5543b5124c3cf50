"""The console's routes: the page, its modules and the vendored packages (see the
package docstring). Missing packages (``make install`` not run) are a 503 page that says
so, never a blank page."""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

from corral.errors import NotFound

WEB = Path(__file__).parent / "web"
APP = WEB / "app"
PACKAGES = WEB / "node_modules"
PREFIX = "/console"

IMPORTS = {
    "preact": "preact/dist/preact.module.js",
    "preact/hooks": "preact/hooks/dist/hooks.module.js",
    "htm": "htm/dist/htm.module.js",
    "@xterm/xterm": "@xterm/xterm/lib/xterm.mjs",
    "@xterm/addon-fit": "@xterm/addon-fit/lib/addon-fit.mjs",
    "uplot": "uplot/dist/uPlot.esm.js",
}
"""The import map: bare module names to files under /console/vendor."""
VENDOR = (
    "preact/dist/",
    "preact/hooks/dist/",
    "htm/dist/",
    "@xterm/xterm/lib/",
    "@xterm/xterm/css/",
    "@xterm/addon-fit/lib/",
    "uplot/dist/",
)
"""The folders of packages that are served (the rest of node_modules is not)."""
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".map": "application/json"}
MISSING = (
    "<!doctype html><title>corral console</title><h1>The console's packages are not installed</h1>"
    "<p>Run <code>make install</code> (npm ci in corral/api/console/web), then reload.</p>"
)


@cache
def import_map() -> str:
    return json.dumps({"imports": {name: f"{PREFIX}/vendor/{path}" for name, path in IMPORTS.items()}})


@cache
def policy() -> str:
    """The Content-Security-Policy of every console answer."""
    digest = base64.b64encode(hashlib.sha256(import_map().encode()).digest()).decode()
    return "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' 'sha256-{digest}'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data: blob:",
            "font-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "object-src 'none'",
        )
    )


HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": policy(), **HEADERS}


def router() -> APIRouter:
    r = APIRouter(prefix=PREFIX, include_in_schema=False)

    @r.get("")
    @r.get("/")
    async def page() -> Response:
        if not PACKAGES.is_dir():
            return HTMLResponse(MISSING, status_code=503, headers=_headers())
        html = (APP / "index.html").read_text().replace("<!--importmap-->", import_map())
        return HTMLResponse(html, headers=_headers())

    @r.get("/app/{path:path}")
    async def app_file(path: str) -> Response:
        return _file(APP, path)

    @r.get("/vendor/{path:path}")
    async def vendor_file(path: str) -> Response:
        if not path.startswith(VENDOR):
            raise NotFound(f"no such console file: {path}")
        return _file(PACKAGES, path)

    return r


def _file(root: Path, path: str) -> Response:
    """The file ``path`` under ``root`` (our own install, not a sandbox's tree); NotFound
    for one outside it or missing."""
    found = (root / path).resolve()
    if not found.is_relative_to(root.resolve()) or not found.is_file():
        raise NotFound(f"no such console file: {path}")
    media = TYPES.get(found.suffix, "application/octet-stream")
    return FileResponse(found, media_type=media, headers=_headers())
