"""``GET /metrics``: Prometheus text, no auth, per-app registries, moving with traffic."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.unit.api.harness import serving

SPEC_002 = (
    "xgen_http_requests_total",
    "xgen_http_request_duration_seconds",
    "xgen_sandboxes_active",
    "xgen_sandbox_create_total",
    "xgen_sandbox_delete_total",
)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics", headers={"X-API-Key": ""})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_traffic(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, client):
        before = await scrape(client)
        assert {name for name, _ in before} >= {"xgen_sandboxes_active", "xgen_sandbox_create_total"}
        sid = (await client.post("/api/sandboxes", json={})).json()["sandboxID"]
        for _ in range(3):
            assert (await client.get(f"/api/sandboxes/{sid}")).status_code == 200
        assert (await client.post(f"/api/sandboxes/{sid}/exec/run", json={"cmd": "true"})).status_code == 200
        during = await scrape(client)
        assert (await client.delete(f"/api/sandboxes/{sid}")).status_code == 204
        await app.state.core.audit.flush()
        after = await scrape(client)

    get = {"method": "GET", "path": "/api/sandboxes/{sandbox_id}"}
    assert value(during, "xgen_http_requests_total", **get, status="200") == 3
    assert value(during, "xgen_http_request_duration_seconds_count", **get) == 3
    assert value(during, "xgen_sandbox_create_total") == value(before, "xgen_sandbox_create_total") + 1
    assert value(during, "xgen_sandboxes_active") == value(before, "xgen_sandboxes_active") + 1
    assert value(during, "corral_exec_total", outcome="ok") == 1
    assert value(during, "corral_exec_duration_seconds_count") == 1
    assert value(during, "corral_sandbox_create_duration_seconds_count") == 1
    assert value(after, "xgen_sandbox_delete_total") == 1
    assert value(after, "xgen_sandboxes_active") == value(before, "xgen_sandboxes_active")
    assert value(after, "corral_audit_records_total", outcome="written") >= 4  # create, exec x2, kill
    assert {name for name, _ in after} >= {
        "xgen_http_requests_total", "xgen_http_request_duration_seconds_bucket", "xgen_sandboxes_active",
        "xgen_sandbox_create_total", "xgen_sandbox_delete_total",
    }  # fmt: skip


async def test_unmatched_paths_do_not_explode_the_labels(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_app, client):
        for n in range(3):
            assert (await client.get(f"/no/such/{n}")).status_code == 404
        samples = await scrape(client)
    assert value(samples, "xgen_http_requests_total", method="GET", path="<unmatched>", status="404") == 3
    assert not any("/no/such" in dict(labels).get("path", "") for _, labels in samples)


async def test_each_app_has_its_own_registry(tmp_path: Path) -> None:
    async with serving(tmp_path / "a") as (_a, one), serving(tmp_path / "b") as (_b, two):
        await one.post("/api/sandboxes", json={})
        assert value(await scrape(one), "xgen_sandbox_create_total") == 1
        assert value(await scrape(two), "xgen_sandbox_create_total") == 0
