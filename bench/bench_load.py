#!/usr/bin/env python3
"""Load benchmark: many clients doing exec round trips at once (issue 17, item 5).

Run as root from the repository root:

    .venv/bin/python bench/bench_load.py                        # 100 clients, 20 sandboxes, 60 s
    .venv/bin/python bench/bench_load.py --clients 20 --seconds 10

It starts its own ``corral serve`` (a temporary data dir, its own network ``cload0`` on
10.249.0.0/16, the base template from the benchmarks' cache; the API rate limit, the org cap and the node's promises lifted:
``CORRAL_RATE_LIMIT_API=0``), creates ``--sandboxes`` sandboxes, then:

1. idle: the other routes' latency with nothing else going on (``GET
   /api/sandboxes/{id}``, ``GET /api/sandboxes``, ``GET /metrics``, ``GET /healthz``;
   one probe of each every 100 ms for ``--probe-seconds``);
2. load: ``--clients`` clients, each its own keep-alive connection, each doing
   ``POST /api/sandboxes/{id}/exec/run {cmd: "echo ok"}`` round trips one after another
   on a sandbox of its own choosing (client i uses sandbox i mod N) for ``--seconds``,
   every answer checked (200, exit code 0, the output); meanwhile the same probes of
   the other routes.

It reports exec round trips done, errors (any non-200, wrong answer, timeout), p50,
p99, the rate, and each other route's p50/p99 idle and under load. Bounded; removes
everything it made, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable
from pathlib import Path

import entry
import httpx
from corral_target import CorralServer, CorralTarget, Network, ensure_template_cache
from stats import Summary, fmt_ms

OP_TIMEOUT = 30.0
NETWORK = Network("cload0", "10.249.0.0/16", 249)
SETTINGS = {
    "CORRAL_RATE_LIMIT_API": "0",
    "CORRAL_MAX_LIVE_SANDBOXES_PER_ORG": "0",
    "CORRAL_MAX_PROMISED_DISK_MB": "0",
    "CORRAL_MAX_PROMISED_MEMORY_MB": "0",
}


async def probes(
    client: httpx.AsyncClient, sandbox_id: str, until: float, out: dict[str, list[float]], errors: list[str]
) -> None:
    routes = {
        "get": f"/api/sandboxes/{sandbox_id}",
        "list": "/api/sandboxes",
        "metrics": "/metrics",
        "healthz": "/healthz",
    }
    while time.monotonic() < until:
        for name, path in routes.items():
            start = time.perf_counter()
            try:
                response = await client.get(path, timeout=OP_TIMEOUT)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"{path}: {exc!r}")
            out.setdefault(name, []).append(time.perf_counter() - start)
        await asyncio.sleep(0.1)


async def exec_client(
    url: str, key: str, sandbox_id: str, until: float, samples: list[float], errors: list[str]
) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=OP_TIMEOUT) as client:
        while time.monotonic() < until:
            start = time.perf_counter()
            try:
                response = await client.post(
                    f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "echo", "args": ["ok"]}
                )
                body = response.json() if response.status_code == 200 else {}
                if response.status_code != 200 or body.get("exitCode") != 0 or body.get("stdout") != "ok\n":
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
            except (httpx.HTTPError, ValueError) as exc:
                errors.append(repr(exc))
                continue
            samples.append(time.perf_counter() - start)


def cells(values: list[float]) -> str:
    if not values:
        return "0 | - | -"
    s = Summary.of(values)
    return f"{len(values)} | {fmt_ms(s.p50)} | {fmt_ms(s.p99)}"


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    templates = ensure_template_cache(args.template_cache)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    server = CorralServer(templates, args.workdir, network=NETWORK)
    server.extra_env.update(SETTINGS)
    server.extra_env.update(dict(pair.split("=", 1) for pair in args.env))
    target: CorralTarget | None = None
    idle: dict[str, list[float]] = {}
    loaded: dict[str, list[float]] = {}
    probe_errors: list[str] = []
    samples: list[float] = []
    errors: list[str] = []
    elapsed = 0.0
    try:
        await server.start()
        target = CorralTarget(server.url, server.api_key, server.runc_root, server_pid=server.pid)
        await target.setup()
        ids = [await asyncio.wait_for(target.create(), 120) for _ in range(args.sandboxes)]
        for sandbox_id in ids:
            await target.exec_true(sandbox_id)
        print(f"{len(ids)} sandboxes; idle probes for {args.probe_seconds} s", flush=True)
        await probes(target.client, ids[0], time.monotonic() + args.probe_seconds, idle, probe_errors)
        print(f"{args.clients} clients for {args.seconds} s", flush=True)
        until = time.monotonic() + args.seconds
        start = time.perf_counter()
        clients: list[Awaitable[None]] = [
            exec_client(server.url, server.api_key, ids[n % len(ids)], until, samples, errors)
            for n in range(args.clients)
        ]
        await asyncio.gather(*clients, probes(target.client, ids[0], until, loaded, probe_errors))
        elapsed = time.perf_counter() - start
    finally:
        if target is not None:
            await target.close()
        server.stop(keep_log=args.server_log)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    s = Summary.of(samples) if samples else None
    print(
        f"exec round trips: {len(samples)} in {elapsed:.1f} s ({len(samples) / max(elapsed, 1e-9):.0f}/s), "
        f"errors {len(errors)}, p50 {fmt_ms(s.p50) if s else '-'}, p99 {fmt_ms(s.p99) if s else '-'}"
    )
    print("| route | idle: calls | p50 | p99 | under load: calls | p50 | p99 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("get", "list", "metrics", "healthz"):
        print(f"| {name} | {cells(idle.get(name, []))} | {cells(loaded.get(name, []))} |")
    for text in (errors + probe_errors)[:5]:
        print(f"- error: {text}")
    return 1 if errors or probe_errors else 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--sandboxes", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--probe-seconds", type=float, default=10.0)
    entry.add_server_options(p)
    return p.parse_args()


def main() -> int:
    return entry.run(main_async, parse_args())


if __name__ == "__main__":
    sys.exit(main())
