"""A real browser (headless Chromium) opens a preview URL: the page's token comes as
``?token=``, the gateway sets the cookie, and the page's script and the data it loads
come through the gateway on that cookie alone (on the gateway's fast path).

Skipped only when ``chromium`` is missing although ``scripts/install-deps.sh`` would
install it (run that script); if the script does not list it, the test fails instead.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.unit.gateway.conftest import Gw

pytestmark = pytest.mark.asyncio(loop_scope="module")
INSTALL_SCRIPT = Path(__file__).parents[3] / "scripts" / "install-deps.sh"
CHROMIUM = shutil.which("chromium")


def _installed_by_script() -> bool:
    return "[chromium]=chromium" in INSTALL_SCRIPT.read_text()


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and _installed_by_script(),
    reason="chromium is not installed: run scripts/install-deps.sh",
)


async def dump_dom(url: str, profile: Path) -> str:
    assert CHROMIUM is not None, "chromium is missing and scripts/install-deps.sh does not install it"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--dump-dom",
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 45)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@needs_chromium
async def test_chromium_loads_a_preview_page_and_its_resources(gw: Gw, tmp_path: Path) -> None:
    base = f"http://{gw.port}-{gw.sid}.localhost:{gw.server.port}"
    fast_path = gw.gateway.fast_path
    served = fast_path.served
    dom = await dump_dom(f"{base}/page.html?token={gw.preview_token}", tmp_path / "profile")
    assert "loaded:from-the-sandbox-42" in dom, dom[-2000:]
    # the page (?token=, a cookie to set) took the ASGI path; the resources it loaded on
    # the cookie came on the browser's kept-alive connection, answered there
    assert fast_path.served > served
    denied = await dump_dom(f"{base}/page.html", tmp_path / "fresh-profile")
    assert "loaded:" not in denied and "missing credentials" in denied  # no token, no cookie: 401
