"""The web console tested in a real browser: headless Chromium (Debian's, over the
DevTools protocol: ``tests/support/browser.py``) against a real ``corral serve`` on runc.

The server runs apart from the other test servers: its own data dir
(``CORRAL_CONSOLE_DATA_DIR``, default ``/var/tmp/corral-console``, kept between runs so
the ``base`` template is built once per machine), runc root, bridge, address pool,
NFLOG group and store (new each session, seeded with an owner key). One browser serves
the whole suite; each test signs in anew. Screenshots of the main pages are kept in
``CORRAL_CONSOLE_SCREENSHOTS`` (default: the session's pytest temp dir,
``.../console-screenshots0``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.support import surface
from tests.support.browser import CHROMIUM, Page, chromium_apart
from tests.support.host_network import owned_network
from tests.support.template import build_base

DATA_DIR = Path(os.environ.get("CORRAL_CONSOLE_DATA_DIR", "/var/tmp/corral-console"))
RUN_DIR = "/run/corral-console"


@dataclass
class Server:
    url: str
    key: str  # the owner's
    data_dir: Path
    database_url: str
    env: dict[str, str]

    def cli(self, *args: str) -> str:
        return surface.cli(self.env, self.data_dir, self.database_url, *args)

    def http(self, credential: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {credential or self.key}"}, timeout=120
        )


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    if CHROMIUM is None:
        pytest.skip("chromium is missing: run scripts/install-deps.sh")
    work = tmp_path_factory.mktemp("console-server")
    key = f"ek_con{secrets.token_hex(6)}_{secrets.token_hex(24)}"
    database_url = f"sqlite+aiosqlite:///{work / 'corral.db'}"
    env = {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{RUN_DIR}/runc",
        "CORRAL_NETWORK_BRIDGE": "corralcon0",
        "CORRAL_NETWORK_POOL": "10.231.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": "231",
        "CORRAL_NETWORK_STATE_DIR": f"{RUN_DIR}/network",
        "CORRAL_API_KEY": key,
    }
    Path(RUN_DIR).mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{RUN_DIR}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # one test session at a time on this data dir
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        with owned_network(env):  # removed while the lock is held: the next session makes its own
            build_base(env, work / "template-build.log", DATA_DIR)
            with surface.served(DATA_DIR, database_url, env, work / "server.log") as (_proc, url):
                yield Server(url, key, DATA_DIR, database_url, env)
    finally:
        os.close(fd)


class Console:
    """The console in one browser tab: sign in, go to a page, type, click, read."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.failed: list[str] = []  # requests the browser saw fail (for failure messages)

    async def watch_network(self) -> None:
        """Records the requests that fail (``Network.loadingFailed``) in ``failed``."""
        await self.page.call("Network.enable")
        recv = self.page.ws.recv

        async def tapped() -> str | bytes:
            message = await recv()
            event = json.loads(message)
            if event.get("method") == "Network.loadingFailed":
                self.failed.append(f"{event['params'].get('type')}: {event['params'].get('errorText')}")
            return message

        self.page.ws.recv = tapped  # type: ignore[method-assign,assignment]

    async def sign_in(self, credential: str, email: str | None = None) -> None:
        """Opens the sign-in page anew and submits ``credential`` (a key, or a user's
        token with ``email``); does not wait for the outcome."""
        # the tab's session storage emptied from a page of the console's origin that runs
        # no script of the console (its style sheet), then the console opened anew
        await self.page.open(f"{self.url}/console/app/console.css")
        await self.page.settled(
            "location.pathname.endsWith('.css') && (sessionStorage.clear(), sessionStorage.length === 0)"
        )
        await self.page.open(f"{self.url}/console")
        try:
            await self.page.settled("document.getElementById('signin') !== null", 30)
        except AssertionError:
            shown = await self.text("body")
            raise AssertionError(f"no sign-in page: {shown!r}; failed: {self.failed}") from None
        if email is not None:
            await self.click("[role=tab]:nth-child(2)")
            await self.page.settled("document.getElementById('token') !== null")
            await self.fill("#email", email)
            await self.fill("#token", credential)
        else:
            await self.fill("#key", credential)
        await self.click("#signin")

    async def signed_in(self, credential: str, email: str | None = None) -> None:
        await self.sign_in(credential, email)
        await self.page.settled("document.getElementById('role') !== null", 30)

    async def go(self, page: str) -> None:
        await self.page.evaluate(f"location.hash = {json.dumps(page)}")

    async def fill(self, selector: str, text: str) -> None:
        """Types ``text`` into the field (what was there is replaced), as a user would."""
        await self.page.settled(
            f"(e => e ? (e.focus(), e.select?.(), true) : false)(document.querySelector({json.dumps(selector)}))"
        )
        await self.page.call("Input.insertText", text=text)

    async def press_enter(self) -> None:
        enter: dict[str, Any] = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.page.call("Input.dispatchKeyEvent", type="keyDown", text="\r", **enter)
        await self.page.call("Input.dispatchKeyEvent", type="keyUp", **enter)

    async def click(self, selector: str, timeout: float = 30) -> None:
        """Clicks the element once it is there."""
        await self.page.settled(
            f"(e => e ? (e.click(), true) : false)(document.querySelector({json.dumps(selector)}))", timeout
        )

    async def text(self, selector: str) -> str:
        return str(
            await self.page.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText ?? ''")
        )

    async def shows(self, selector: str, needle: str, timeout: float = 30) -> None:
        """Waits until the element's text holds ``needle``."""
        expression = f"(document.querySelector({json.dumps(selector)})?.innerText ?? '').includes({json.dumps(needle)})"
        try:
            await self.page.settled(expression, timeout)
        except AssertionError:
            raise AssertionError(
                f"{selector} never showed {needle!r}; it shows {await self.text(selector)!r}"
            ) from None

    async def exists(self, selector: str) -> bool:
        return bool(await self.page.evaluate(f"document.querySelector({json.dumps(selector)}) !== null"))

    async def fetch(self, method: str, path: str) -> int:
        """The status of a request the page makes itself with its stored credential."""
        body = json.dumps("{}" if method != "GET" else None)
        headers = "{'Content-Type': 'application/json', Authorization: 'Bearer ' + sessionStorage.getItem('corral.credential')}"
        script = (
            f"fetch({json.dumps(path)}, {{method: {json.dumps(method)}, body: {body}, headers: {headers}}})"
        )
        return int(await self.page.evaluate(script + ".then(r => r.status)"))


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser(console_server: Server, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    port = int(console_server.url.rsplit(":", 1)[1])
    async with chromium_apart(
        tmp_path_factory.mktemp("console-chromium"), port, width=1366, height=860
    ) as page:
        console = Console(page, console_server.url)
        await console.watch_network()
        yield console


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    kept = os.environ.get("CORRAL_CONSOLE_SCREENSHOTS")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("console-screenshots")


@pytest_asyncio.fixture(loop_scope="session")
async def sandbox(console_server: Server) -> AsyncIterator[dict[str, Any]]:
    """A base sandbox of the owner's org, killed at the end."""
    async with console_server.http() as http:
        created = await http.post("/api/sandboxes", json={"templateID": "base", "timeout": 600})
        assert created.status_code == 201, created.text
        yield created.json()
        await http.delete(f"/api/sandboxes/{created.json()['sandboxID']}")
