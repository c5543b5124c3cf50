"""Rate limits over HTTP: headers, 429 with Retry-After, bad keys limited by address."""

from __future__ import annotations

from pathlib import Path

from corral.auth.ratelimit import surface_limits
from corral.settings import Settings
from tests.unit.api.harness import new_key, serving


def test_the_defaults_per_surface() -> None:
    assert surface_limits(Settings()) == {"api": 600, "xgen": 120, "runs": 60, "enclave": 600, "copass": 600}


async def test_a_burst_gets_429_with_retry_after_and_other_callers_are_unaffected(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit_api=5) as (app, client):
        seen = []
        for _ in range(5):
            r = await client.get("/api/sandboxes")
            assert r.status_code == 200 and r.headers["x-ratelimit-limit"] == "5"
            seen.append(int(r.headers["x-ratelimit-remaining"]))
        assert seen == [4, 3, 2, 1, 0]
        refused = await client.get("/api/sandboxes")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 12
        assert refused.headers["x-ratelimit-remaining"] == "0"
        assert "rate limit exceeded: 5 requests a minute" in refused.json()["error"]
        other = await new_key(app, "developer")
        assert (await client.get("/api/sandboxes", headers={"X-API-Key": other})).status_code == 200
        assert b'corral_rate_limited_total{surface="api"} 1.0' in (await client.get("/metrics")).content


async def test_a_burst_of_bad_keys_is_limited_by_address(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit_api=4) as (_app, client):
        statuses = []
        for n in range(6):
            bad = {"X-API-Key": f"ek_nosuchkey{n:02d}_" + "x" * 32}
            statuses.append((await client.get("/api/sandboxes", headers=bad)).status_code)
        assert statuses == [401, 401, 401, 401, 429, 429]
        assert (await client.get("/api/sandboxes", headers={"X-API-Key": ""})).status_code == 429
        assert (await client.get("/api/sandboxes")).status_code == 200  # a valid key has its own bucket


async def test_the_xgen_surface_has_its_own_limit_and_envelope(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit_xgen=2) as (app, client):
        key = await new_key(app, "viewer")
        for _ in range(2):
            assert (await client.post("/api/v1/auth/token", json={"api_key": key})).status_code == 200
        refused = await client.post("/api/v1/auth/token", json={"api_key": key})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["code"] == "QUOTA_EXCEEDED"
        assert (await client.get("/api/sandboxes")).headers["x-ratelimit-limit"] == "600"


async def test_health_and_metrics_are_never_limited(tmp_path: Path) -> None:
    async with serving(tmp_path, rate_limit_api=1) as (_app, client):
        for _ in range(5):
            assert (await client.get("/metrics")).status_code == 200
            health = await client.get("/healthz")
            assert health.status_code == 200 and "x-ratelimit-limit" not in health.headers
