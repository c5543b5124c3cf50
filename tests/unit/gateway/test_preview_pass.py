"""Preview passes (``PreviewService.browser_url``): the link corral hands a browser
admits it to one port of one sandbox, by xgen's host form, with or without a preview
URL of that port, its token becoming the preview cookie; nothing else opens with it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio

from corral.services.previews import PreviewService
from tests.support.sockets import refused_port
from tests.unit.gateway.conftest import Gw, start_app

pytestmark = pytest.mark.asyncio(loop_scope="module")


def previews(gw: Gw) -> PreviewService:
    return gw.server.app.state.core.previews  # type: ignore[no-any-return]


def request_of(gw: Gw, url: str) -> tuple[str, dict[str, str]]:
    """Where to send a request for ``url`` (the server, the host in a header: the
    resolver may not know *.localhost) and that header."""
    parts = urlsplit(url)
    return f"{gw.server.url}{parts.path}?{parts.query}", {"Host": parts.netloc}


@pytest_asyncio.fixture(loop_scope="module")
async def bare(gw: Gw) -> AsyncIterator[tuple[str, int]]:
    """A sandbox without preview auth and without preview URLs, serving on a port."""
    created = await gw.api.post("/sandboxes", json={})
    assert created.status_code == 201, created.text
    sid = created.json()["sandboxID"]
    port = await start_app(gw.api, gw.server.url, sid)
    yield sid, port
    await gw.api.delete(f"/sandboxes/{sid}")


async def test_a_browser_url_opens_its_port_and_sets_the_cookie(
    gw: Gw, bare: tuple[str, int], client: httpx.AsyncClient
) -> None:
    sid, port = bare
    url = previews(gw).browser_url(sid, port)
    assert url.startswith(f"http://sbx-{sid}-{port}.localhost:{gw.server.port}/?token=")
    target, host = request_of(gw, url.replace("/?", "/headers?"))
    first = await client.get(target, headers=host)
    assert first.status_code == 200, first.text
    assert first.json()["target"] == "/headers"  # the pass is not passed on
    token = urlsplit(url).query.removeprefix("token=")
    assert first.headers["set-cookie"].startswith(f"corral_preview_token={token};")
    again = await client.get(
        f"{gw.server.url}/hello", headers={**host, "Cookie": f"corral_preview_token={token}"}
    )
    assert again.status_code == 200 and again.text == "hello from the sandbox"
    assert previews(gw).browser_url(sid, port) == url  # the same link in every answer


async def test_a_pass_opens_nothing_else(gw: Gw, bare: tuple[str, int], client: httpx.AsyncClient) -> None:
    sid, port = bare
    token = previews(gw).pass_for(sid, port)
    with refused_port() as other_port:
        other = await client.get(
            f"{gw.server.url}/hello?token={token}", headers={"Host": f"sbx-{sid}-{other_port}.localhost"}
        )
    assert other.status_code == 401  # another port of the same sandbox
    elsewhere = await client.get(
        f"{gw.server.url}/hello?token={token}", headers={"Host": f"sbx-{gw.sid}-{gw.port}.localhost"}
    )
    assert elsewhere.status_code == 401  # the same port number of another sandbox
    forged = previews(gw).pass_for(sid, port)[:-2] + "AA"
    response = await client.get(
        f"{gw.server.url}/hello?token={forged}", headers={"Host": f"sbx-{sid}-{port}.localhost"}
    )
    assert response.status_code == 401 and "set-cookie" not in response.headers
    bare_request = await client.get(f"{gw.server.url}/hello", headers={"Host": f"sbx-{sid}-{port}.localhost"})
    assert bare_request.status_code == 401


async def test_a_pass_stops_with_its_sandbox(gw: Gw, client: httpx.AsyncClient) -> None:
    created = await gw.api.post("/sandboxes", json={})
    sid = created.json()["sandboxID"]
    port = await start_app(gw.api, gw.server.url, sid)
    target, host = request_of(gw, previews(gw).browser_url(sid, port).replace("/?", "/hello?"))
    assert (await client.get(target, headers=host)).status_code == 200
    assert (await gw.api.delete(f"/sandboxes/{sid}")).status_code == 204
    assert (await client.get(target, headers=host)).status_code == 404
