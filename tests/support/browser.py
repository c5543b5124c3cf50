"""A headless Chromium driven over the DevTools protocol: open a page, take screenshots,
count their pixels by color (the screenshot is decoded by the browser itself, so no
image library is needed).

``chromium`` is Debian's (scripts/install-deps.sh installs it); ``CHROMIUM`` is None
where it is missing. ``chromium_apart`` runs it in a network namespace of its own: Chromium
aborts requests in flight (net::ERR_NETWORK_CHANGED) whenever a network interface of its
namespace comes or goes, which sandboxes' veths do on the host all the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect, unix_connect

from tests.support.conditions import eventually_async
from tests.support.loopback_bridge import pipe_unix_to_tcp

CHROMIUM = shutil.which("chromium")

# Runs in the page: decodes a PNG (base64) and counts the pixels within ``tolerance``
# of each color [r, g, b]; answers {"total": n, "counts": [...]}.
COUNT_COLORS = """
async (png, colors, tolerance) => {
  const image = new Image();
  image.src = "data:image/png;base64," + png;
  await image.decode();
  const canvas = new OffscreenCanvas(image.width, image.height);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  const data = context.getImageData(0, 0, image.width, image.height).data;
  const counts = colors.map(() => 0);
  for (let i = 0; i < data.length; i += 4) {
    colors.forEach(([r, g, b], k) => {
      if (Math.abs(data[i] - r) <= tolerance && Math.abs(data[i + 1] - g) <= tolerance
          && Math.abs(data[i + 2] - b) <= tolerance) counts[k]++;
    });
  }
  return {total: data.length / 4, counts};
}
"""


class Page:
    """One tab, over its DevTools WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send a command and return its result (events and late answers to calls that
        timed out are skipped); TimeoutError after ``timeout`` seconds."""
        call_id = next(self._ids)
        await self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            message = json.loads(await asyncio.wait_for(self.ws.recv(), max(left, 0.001)))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result

    async def open(self, url: str) -> None:
        """Navigate to ``url`` (what it shows is for screenshots to tell)."""
        await self.call("Page.navigate", url=url)

    async def settled(self, expression: str, timeout: float = 60) -> None:
        """Waits until ``expression`` is truthy in the page (after a navigation, which
        may redirect)."""

        async def holds() -> bool:
            try:
                return bool(await self.evaluate(expression, timeout=5))
            except (RuntimeError, TimeoutError):
                return False  # between two documents

        await eventually_async(holds, timeout, f"never true in the page: {expression}", interval=0.2)

    async def evaluate(self, expression: str, timeout: float = 60) -> Any:
        answer = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in answer:
            raise RuntimeError(f"evaluating in the page failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def screenshot(self) -> str:
        """A PNG of the viewport, base64. Right after a navigation (a redirect of the
        page's own) the tab may have no page for a moment: tried again then."""
        for _ in range(20):
            try:
                return str((await self.call("Page.captureScreenshot", 15, format="png"))["data"])
            except TimeoutError:
                continue  # a capture begun across a navigation may never answer
            except RuntimeError as exc:
                if "Not attached" not in str(exc):
                    raise
                await self.call("Runtime.evaluate", expression="1")  # a round trip, then again
        raise AssertionError("the tab never had a page to capture")

    async def color_shares(self, colors: list[tuple[int, int, int]], tolerance: int = 24) -> list[float]:
        """For a new screenshot: the share of its pixels within ``tolerance`` of each
        color (in each of red, green and blue), in order."""
        png = await self.screenshot()
        counted = await self.evaluate(
            f"({COUNT_COLORS})({json.dumps(png)}, {json.dumps([list(c) for c in colors])}, {tolerance})"
        )
        return [count / counted["total"] for count in counted["counts"]]


def _args(profile: Path, width: int, height: int) -> list[str]:
    assert CHROMIUM is not None, "chromium is missing: run scripts/install-deps.sh"
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--window-size={width},{height}",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        "about:blank",
    ]


@contextlib.asynccontextmanager
async def chromium(profile: Path, width: int = 1280, height: int = 800) -> AsyncIterator[Page]:
    """A headless Chromium with one blank tab, stopped at the end."""
    profile.mkdir(parents=True, exist_ok=True)
    active = profile / "DevToolsActivePort"
    active.unlink(missing_ok=True)  # a former browser's
    proc = await asyncio.create_subprocess_exec(
        *_args(profile, width, height),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await eventually_async(lambda: _exists(active), 30, "chromium did not open its DevTools port")
        port = int(active.read_text().split()[0])
        async with httpx.AsyncClient(timeout=30) as http:
            tabs = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in tabs if t.get("type") == "page")
        async with connect(page_url, max_size=64 << 20) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            yield page
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def chromium_apart(
    profile: Path, port: int, width: int = 1280, height: int = 800
) -> AsyncIterator[Page]:
    """``chromium``, in a network namespace of its own (``unshare --net``: loopback only,
    nothing coming or going) where ``127.0.0.1:port`` is the host's ``127.0.0.1:port``
    (``tests.support.loopback_bridge``); the DevTools port is reached the same way."""
    profile.mkdir(parents=True, exist_ok=True)
    active = profile / "DevToolsActivePort"
    active.unlink(missing_ok=True)
    host_socket, devtools_socket = profile / "host.sock", profile / "devtools.sock"
    for stale in (host_socket, devtools_socket):
        stale.unlink(missing_ok=True)
    bridge = await pipe_unix_to_tcp(host_socket, port)
    proc = await asyncio.create_subprocess_exec(
        "unshare", "--net", "--", sys.executable, "-m", "tests.support.loopback_bridge",
        str(port), str(host_socket), str(active), str(devtools_socket), "--", *_args(profile, width, height),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        await eventually_async(devtools_socket.exists, 30, "chromium did not open its DevTools port")
        transport = httpx.AsyncHTTPTransport(uds=str(devtools_socket))
        async with httpx.AsyncClient(transport=transport, timeout=30) as http:
            tabs = (await http.get("http://127.0.0.1/json/list")).json()
        page_url = next(t["webSocketDebuggerUrl"] for t in tabs if t.get("type") == "page")
        async with unix_connect(str(devtools_socket), page_url, max_size=64 << 20) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            yield page
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the bridge and the browser it started
        await proc.wait()
        bridge.close()


async def _exists(path: Path) -> bool:
    return path.exists() and bool(path.read_text().strip())
