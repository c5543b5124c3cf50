"""Egress through the real server and runc: what a sandbox may reach, changed at runtime.

The "outside" hosts are network namespaces this test session makes itself (the
``world`` of tests/support/network_world.py: TEST-NET addresses 198.18.x behind veths
on this host); nothing else is ever contacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Server
from tests.support.conditions import eventually
from tests.support.network_world import World, made_world

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with made_world() as made:
        yield made


def create(server: Server, **body: Any) -> str:
    with server.http() as http:
        response = http.post("/sandboxes", json={"timeout": 0, **body})
        assert response.status_code == 201, response.text
        return str(response.json()["sandboxID"])


def sh(server: Server, sid: str, command: str) -> dict[str, Any]:
    with server.http() as http:
        response = http.post(
            f"/sandboxes/{sid}/exec/run", json={"cmd": "sh", "args": ["-c", command], "timeout": 20}
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


def reaches(server: Server, sid: str, url: str) -> bool:
    return sh(server, sid, f"curl -s -o /dev/null -m 3 {url}")["exitCode"] == 0


def test_policy_allows_denies_and_changes_at_runtime(server: Server, world: World) -> None:
    sid = create(server, egress={"mode": "deny_all", "allow": [f"{world.out1}/32"]})
    try:
        assert reaches(server, sid, f"http://{world.out1}/")
        assert not reaches(server, sid, f"http://{world.out2}/")
        # the denial is on the sandbox's audit trail, with the destination
        denied: list[dict[str, Any]] = []

        def recorded() -> bool:
            with server.http() as http:
                events = http.get(f"/sandboxes/{sid}/audit").json()
            items = events["events"] if isinstance(events, dict) else events
            denied[:] = [e for e in items if "egress" in e.get("kind", "")]
            return bool(denied)

        eventually(recorded, 10, "no egress denial recorded", 0.3)
        assert world.out2 in str(denied[0])
        with server.http() as http:
            put = http.put(f"/sandboxes/{sid}/network", json={"mode": "allow_all"})
            assert put.status_code == 200, put.text
        assert reaches(server, sid, f"http://{world.out2}/")
        with server.http() as http:
            http.put(f"/sandboxes/{sid}/network", json={"mode": "deny_all"})
        assert not reaches(server, sid, f"http://{world.out1}/")
    finally:
        with server.http() as http:
            http.delete(f"/sandboxes/{sid}")


def test_host_and_other_sandboxes_are_unreachable_even_under_allow_all(server: Server) -> None:
    a = create(server, egress={"mode": "allow_all"})
    b = create(server, egress={"mode": "allow_all"})
    try:
        with server.http() as http:
            started = http.post(
                f"/sandboxes/{b}/exec",
                json={"cmd": "python3", "args": ["-m", "http.server", "8000", "--bind", "0.0.0.0"]},
            )
            assert started.status_code == 201, started.text
        b_ip = sh(server, b, "hostname -I")["stdout"].split()[0]
        gateway = sh(server, a, "ip route 2>/dev/null | awk '/default/ {print $3}' || true")["stdout"].strip()
        if not gateway:  # no iproute2 in the template: read the default route from /proc
            gateway = sh(server, a, "awk '$2==\"00000000\" {print $3}' /proc/net/route")["stdout"].strip()
            gateway = ".".join(str(int(gateway[i : i + 2], 16)) for i in (6, 4, 2, 0))
        assert reaches(server, b, "http://127.0.0.1:8000/")  # the server runs
        assert not reaches(server, a, f"http://{b_ip}:8000/")  # another sandbox
        port = server.url.rsplit(":", 1)[1]
        assert not reaches(server, a, f"http://{gateway}:{port}/healthz")  # the control plane
        assert not reaches(server, a, "http://169.254.169.254/")  # metadata
        # DNS on the gateway is the one thing the host answers
        assert "nameserver " + gateway in sh(server, a, "cat /etc/resolv.conf")["stdout"]
    finally:
        with server.http() as http:
            http.delete(f"/sandboxes/{a}")
            http.delete(f"/sandboxes/{b}")
