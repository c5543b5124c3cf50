"""Which requests are the gateway's (``Router.match``), and what its headers do, without
a server."""

from __future__ import annotations

from typing import Any

import pytest

from corral.api.credentials import query_param, without_query_param
from corral.gateway import routing
from corral.gateway.cors import CorsPolicy
from corral.gateway.headers import response_headers, scoped_cookie, without_cookie
from corral.gateway.routing import Redirect, Router, Target

SID = "sb-0123456789abcdef"
router = Router(["localhost", "preview.example.com"])


def scope(host: str, path: str = "/", query: bytes = b"") -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(b"host", host.encode())] if host else [],
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
    }


@pytest.mark.parametrize(
    ("host", "port"),
    [
        (f"3000-{SID}.localhost:8080", 3000),
        (f"3000-{SID}.localhost", 3000),
        (f"{SID}-p3000.localhost:8080", 3000),
        (f"{SID.upper()}-P3000.LOCALHOST.", 3000),
        (f"65535-{SID}.preview.example.com", 65535),
        (f"sbx-{SID}-6080.localhost:8080", 6080),  # xgen's form
        (f"SBX-{SID.upper()}-6080.preview.example.com", 6080),
        (f"sbx-{SID}-70000.localhost", 0),
        (f"0-{SID}.localhost", 0),
        (f"70000-{SID}.localhost", 0),
    ],
)
def test_host_forms(host: str, port: int) -> None:
    found = router.match(scope(host, "/a/b", b"x=1"))
    assert found == Target(SID, port, b"/a/b?x=1", "", host)


@pytest.mark.parametrize(
    "host",
    [
        "localhost:8080",
        "127.0.0.1:8080",
        "",
        f"3000-{SID}.evil.com",
        f"3000-{SID}.x.localhost",
        "3000-sb-short.localhost",
        f"sbx-{SID}-p3000.localhost",
        f"sbx-{SID}.localhost",
        f"sbx-{SID}-3000-4000.localhost",
        f"a.3000-{SID}.localhost",
        "[::1]:8080",
    ],
)
def test_other_hosts_are_not_the_gateways(host: str) -> None:
    assert router.match(scope(host, "/api/sandboxes")) is None


def test_a_remembered_host_reads_as_a_new_one_for_any_path() -> None:
    fresh = Router(["localhost"])
    host = f"3000-{SID}.localhost:8080"
    for path, query in (("/a", b""), ("/b/c", b"x=1"), (f"/preview/{SID}/4000/", b"")):
        assert fresh.match(scope(host, path, query)) == Target(
            SID, 3000, path.encode() + (b"?" + query if query else b""), "", host
        )
    # not a host form, remembered too: path routing still reads the path
    assert fresh.match(scope("127.0.0.1:8080", f"/preview/{SID}/4000/x")) == Target(
        SID, 4000, b"/x", f"/preview/{SID}/4000", "127.0.0.1:8080"
    )
    assert fresh.match(scope("127.0.0.1:8080", "/api/sandboxes")) is None


def test_remembered_hosts_are_bounded_in_number_and_size() -> None:
    fresh = Router(["localhost"])
    for i in range(1, routing.MAX_REMEMBERED_HOSTS + 50):
        host = f"{i}-{SID}.localhost"
        assert fresh.match(scope(host, "/")) == Target(SID, i, b"/", "", host)
        assert len(fresh._hosts) <= routing.MAX_REMEMBERED_HOSTS
    long_host = "a" * (routing.MAX_REMEMBERED_HOST_BYTES + 1)
    fresh._hosts.clear()
    assert fresh.match(scope(long_host, "/api")) is None
    assert fresh.match(scope(long_host, f"/preview/{SID}/3000/")) == Target(
        SID, 3000, b"/", f"/preview/{SID}/3000", long_host
    )
    assert not fresh._hosts


def test_path_forms() -> None:
    assert router.match(scope("localhost", f"/preview/{SID}/3000/x/y", b"q=1")) == Target(
        SID, 3000, b"/x/y?q=1", f"/preview/{SID}/3000", "localhost"
    )
    assert router.match(scope("h", f"/preview/{SID}/3000/")) == Target(
        SID, 3000, b"/", f"/preview/{SID}/3000", "h"
    )
    assert router.match(scope("h", f"/preview/{SID}/3000", b"a=1")) == Redirect(f"/preview/{SID}/3000/?a=1")
    for bad in (f"/preview/{SID}/x/", "/preview/nope/3000/", "/preview/", f"/preview/{SID}/99999"):
        found = router.match(scope("h", bad))
        assert isinstance(found, Target) and found.port == 0, bad
    assert router.match(scope("h", "/previewer/x")) is None
    assert router.match(scope("h", "/api/sandboxes/x/preview")) is None


def test_response_headers_drop_hop_by_hop_cors_and_date() -> None:
    raw = [
        (b"connection", b"close, x-private"),
        (b"x-private", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"keep-alive", b"timeout=5"),
        (b"access-control-allow-origin", b"*"),
        (b"access-control-max-age", b"99"),
        (b"date", b"yesterday"),
        (b"content-type", b"text/html"),
        (b"location", b"/login"),
        (b"location", b"//elsewhere/x"),
    ]
    out = response_headers(raw, "/preview/p/1", [(b"x-added", b"1")])
    assert out == [
        (b"content-type", b"text/html"),
        (b"location", b"/preview/p/1/login"),
        (b"location", b"//elsewhere/x"),
        (b"x-added", b"1"),
    ]


def test_cookies() -> None:
    assert scoped_cookie(b"a=1; Domain=.localhost; Path=/app; Secure", "") == b"a=1; Secure; Path=/app"
    assert scoped_cookie(b"a=1; domain=x", "/preview/s/1") == b"a=1; Path=/preview/s/1/"
    assert without_cookie(b"a=1; corral_preview_token=t; b=2") == b"a=1; b=2"
    assert without_cookie(b"corral_preview_token=t") == b""


def test_query_token() -> None:
    assert query_param(b"a=1&token=abc%2Bd+e&b=2", "token") == "abc+d+e"
    assert query_param(b"tokens=1", "token") == ""
    assert without_query_param(b"a=%20&token=x&token=y&b=2", "token") == b"a=%20&b=2"


def test_cors_policy() -> None:
    policy = CorsPolicy(["https://app.example"])
    assert policy.response_headers(b"https://app.example")[0] == (
        b"access-control-allow-origin",
        b"https://app.example",
    )
    assert policy.response_headers(b"https://other.example") == []
    assert CorsPolicy(["*"]).response_headers(b"https://x") == [(b"access-control-allow-origin", b"*")]
    assert CorsPolicy([]).preflight_headers(b"https://x", b"GET", b"") == [(b"vary", b"Origin")]
