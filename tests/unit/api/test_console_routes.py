"""The console's routes: the page with its import map and a strict CSP, its modules,
only the listed folders of the vendored packages, nothing outside them."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from corral.api.console import routes
from tests.unit.api.harness import serving


async def test_the_page_carries_its_import_map_and_a_csp_that_admits_only_it(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        page = await client.get("/console", headers={"X-API-Key": ""})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        found = re.search(r'<script type="importmap">(.*?)</script>', page.text, re.DOTALL)
        assert found is not None
        imports = json.loads(found.group(1))["imports"]
        assert set(imports) >= {"preact", "htm", "@xterm/xterm", "uplot"}
        digest = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
        csp = dict(d.strip().split(" ", 1) for d in page.headers["content-security-policy"].split(";"))
        assert csp["script-src"] == f"'self' 'sha256-{digest}'"  # no inline script but the map
        assert (csp["default-src"], csp["connect-src"], csp["frame-ancestors"]) == (
            "'none'",
            "'self'",
            "'none'",
        )
        assert page.headers["x-frame-options"] == "DENY" and "set-cookie" not in page.headers
        for path in imports.values():  # every module the map names is served, as JavaScript
            module = await client.get(path)
            assert module.status_code == 200, path
            assert module.headers["content-type"].startswith("text/javascript")
            assert module.headers["content-security-policy"] == page.headers["content-security-policy"]
        main = await client.get("/console/app/main.js")
        assert main.status_code == 200 and "render(" in main.text


async def test_nothing_outside_the_app_and_the_listed_package_folders(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        for path in (
            "/console/vendor/preact/package.json",
            "/console/vendor/.package-lock.json",
            "/console/vendor/preact/dist/../../../package.json",
            "/console/app/../routes.py",
            "/console/app/%2e%2e/routes.py",
            "/console/app/nope.js",
        ):
            answer = await client.get(path)
            assert answer.status_code == 404, path
            assert "error" in answer.json()


async def test_without_its_packages_the_page_says_to_run_make_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "PACKAGES", tmp_path / "missing")
    async with serving(tmp_path / "data") as (_app, client):
        page = await client.get("/console")
    assert page.status_code == 503 and "make install" in page.text
