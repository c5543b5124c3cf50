"""The gateway's Copass path form, ``/compute/{session_id}/p/{port}{path}`` (the
``url_template`` of corral/api/copass): what ``Router.match`` makes of it."""

from __future__ import annotations

from typing import Any

import pytest

from corral.gateway.routing import Router, Target

SID = "sb-0123456789abcdef"
router = Router(["localhost"])


def scope(path: str, query: bytes = b"", host: str = "127.0.0.1:8080") -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(b"host", host.encode())],
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
    }


def test_the_path_after_the_port_goes_to_the_sandbox_with_the_query() -> None:
    assert router.match(scope(f"/compute/{SID}/p/3000/api/x", b"a=1")) == Target(
        SID, 3000, b"/api/x?a=1", f"/compute/{SID}/p/3000", "127.0.0.1:8080"
    )


def test_the_bare_per_port_url_is_the_servers_root_without_a_redirect() -> None:
    assert router.match(scope(f"/compute/{SID}/p/8000", b"q=2")) == Target(
        SID, 8000, b"/?q=2", f"/compute/{SID}/p/8000", "127.0.0.1:8080"
    )


def test_a_gateway_host_keeps_its_host_routing() -> None:
    found = router.match(scope(f"/compute/{SID}/p/3000/x", host=f"4000-{SID}.localhost"))
    assert isinstance(found, Target) and (found.port, found.path) == (
        4000,
        f"/compute/{SID}/p/3000/x".encode(),
    )


@pytest.mark.parametrize(
    "path",
    [
        "/compute/",
        "/compute/x",
        f"/compute/{SID}",
        f"/compute/{SID}/p",
        f"/compute/{SID}/q/3000/",
        f"/compute/{SID}/p/0/",
        f"/compute/{SID}/p/65536/",
        f"/compute/{SID}/p/http/",
        "/compute/sb-UPPER0123456789/p/3000/",
        "/compute/../p/3000/",
    ],
)
def test_a_malformed_compute_path_is_the_gateways_and_reaches_no_port(path: str) -> None:
    found = router.match(scope(path))
    assert isinstance(found, Target) and found.port == 0  # answered 404 like an unknown session


def test_other_paths_are_not_the_gateways() -> None:
    assert router.match(scope("/computer/x")) is None
    assert router.match(scope("/api/v1/storage/sandboxes/ns/compute/sessions")) is None
