#!/usr/bin/env python3
"""Load benchmark: many clients doing exec round trips at once (issue 17, item 5).

Run as root from the repository root:

    .venv/bin/python bench/bench_load.py                        # 100 clients, 20 sandboxes, 60 s
    .venv/bin/python bench/bench_load.py --clients 20 --seconds 10
    .venv/bin/python bench/bench_load.py --baseline 3361599   # and that revision's server, one after the other

It starts its own ``corral serve`` (a temporary data dir, its own network ``cload0`` on
10.249.0.0/16, the base template from the benchmarks' cache; the API rate limit, the org cap and the node's promises lifted:
``CORRAL_RATE_LIMIT_API=0``), creates ``--sandboxes`` sandboxes, then:

1. idle: the other routes' latency with nothing else going on (``GET
   /api/sandboxes/{id}``, ``GET /api/sandboxes``, ``GET /metrics``, ``GET /healthz``;
   one probe of each every 100 ms for ``--probe-seconds``, from a process of their own,
   so the clients' busy event loop adds nothing to them);
2. load: ``--clients`` clients, each its own keep-alive connection, each doing
   ``POST /api/sandboxes/{id}/exec/run {cmd: "echo ok"}`` round trips one after another
   on a sandbox of its own choosing (client i uses sandbox i mod N) for ``--seconds``,
   every answer checked (200, exit code 0, the output); meanwhile the same probes of
   the other routes.

It reports exec round trips done, errors (any non-200, wrong answer, timeout), p50,
p99, the rate, and each other route's p50/p99 idle and under load (and the ratio of
the p50s). With ``--baseline REV`` the same run is made against REV's server too (a
``git worktree``, ``bench/baseline.py``), one after the other on the same network (this
tree's first unless ``--baseline-first``). Bounded; removes everything it made, Ctrl-C
included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import entry
import httpx
from baseline import Worktree
from corral_target import HEAD, Code, CorralServer, CorralTarget, Network, ensure_template_cache
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


async def probe_process(
    url: str, key: str, sandbox_id: str, seconds: float, out: dict[str, list[float]], errors: list[str]
) -> None:
    """``probes`` for ``seconds`` from now in a process of their own (``--probe``): the
    clients' event loop, busy with a hundred of them, would add its own waits to every
    probe. The process ends its probes when the clients end theirs (its start-up is not
    added to the time)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--probe",
        url,
        sandbox_id,
        str(time.time() + seconds),
        env={**os.environ, "BENCH_LOAD_KEY": key},
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), seconds + 2 * OP_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    got = json.loads(stdout)
    for name, values in got["samples"].items():
        out.setdefault(name, []).extend(values)
    errors.extend(got["errors"])


async def probe_main(url: str, sandbox_id: str, until_wall: float) -> int:
    out: dict[str, list[float]] = {}
    errors: list[str] = []
    headers = {"X-API-Key": os.environ["BENCH_LOAD_KEY"]}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=OP_TIMEOUT) as client:
        await probes(client, sandbox_id, time.monotonic() + until_wall - time.time(), out, errors)
    print(json.dumps({"samples": out, "errors": errors}))
    return 0


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


@dataclass
class Run:
    """One server's run: its exec round trips and the other routes' probes."""

    name: str
    idle: dict[str, list[float]] = field(default_factory=dict)
    loaded: dict[str, list[float]] = field(default_factory=dict)
    probe_errors: list[str] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    load: str = ""


async def one_run(args: argparse.Namespace, templates: Path, code: Code, network: Network) -> Run:
    """Start ``code``'s server, make the sandboxes, probe idle, then the load; stop it."""
    run = Run(code.name)
    before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    server = CorralServer(templates, args.workdir, code=code, network=network)
    server.extra_env.update(SETTINGS)
    server.extra_env.update(dict(pair.split("=", 1) for pair in args.env))
    target: CorralTarget | None = None
    try:
        await server.start()
        target = CorralTarget(server.url, server.api_key, server.runc_root, server_pid=server.pid)
        await target.setup()
        ids = [await asyncio.wait_for(target.create(), 120) for _ in range(args.sandboxes)]
        for sandbox_id in ids:
            await target.exec_true(sandbox_id)
        print(f"{code.name}: {len(ids)} sandboxes; idle probes for {args.probe_seconds} s", flush=True)
        await probe_process(
            server.url, server.api_key, ids[0], args.probe_seconds, run.idle, run.probe_errors
        )
        print(f"{code.name}: {args.clients} clients for {args.seconds} s", flush=True)
        until = time.monotonic() + args.seconds
        start = time.perf_counter()
        clients: list[Awaitable[None]] = [
            exec_client(server.url, server.api_key, ids[n % len(ids)], until, run.samples, run.errors)
            for n in range(args.clients)
        ]
        loaded = asyncio.ensure_future(
            probe_process(server.url, server.api_key, ids[0], args.seconds, run.loaded, run.probe_errors)
        )
        await asyncio.gather(*clients)
        run.elapsed = time.perf_counter() - start
        await loaded
    finally:
        if target is not None:
            await target.close()
        server.stop(keep_log=args.server_log)
    run.load = f"{before} -> {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    return run


def report(run: Run) -> None:
    samples = run.samples
    s = Summary.of(samples) if samples else None
    print(f"\n## {run.name} (load average {run.load})")
    print(
        f"exec round trips: {len(samples)} in {run.elapsed:.1f} s ({len(samples) / max(run.elapsed, 1e-9):.0f}/s), "
        f"errors {len(run.errors)}, p50 {fmt_ms(s.p50) if s else '-'}, p99 {fmt_ms(s.p99) if s else '-'}"
    )
    print("| route | idle: calls | p50 | p99 | under load: calls | p50 | p99 | p50 load/idle |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("get", "list", "metrics", "healthz"):
        idle, loaded = run.idle.get(name, []), run.loaded.get(name, [])
        ratio = f"{Summary.of(loaded).p50 / Summary.of(idle).p50:.1f}x" if idle and loaded else "-"
        print(f"| {name} | {cells(idle)} | {cells(loaded)} | {ratio} |")
    for text in (run.errors + run.probe_errors)[:5]:
        print(f"- error: {text}")


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    templates = ensure_template_cache(args.template_cache)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    worktree = Worktree(args.baseline, args.workdir or Path("/var/tmp")) if args.baseline else None
    runs: list[Run] = []
    try:
        codes = [HEAD]
        if worktree is not None:
            baseline = worktree.add()
            codes = [baseline, HEAD] if args.baseline_first else [HEAD, baseline]
        for code in codes:
            runs.append(await one_run(args, templates, code, NETWORK))
    finally:
        if worktree is not None:
            worktree.remove()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for run in runs:
        report(run)
    return 1 if any(run.errors or run.probe_errors for run in runs) else 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--sandboxes", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--probe-seconds", type=float, default=10.0)
    p.add_argument("--baseline", help="also run the same against this revision's server, one after the other")
    p.add_argument("--probe", nargs=3, metavar=("URL", "SANDBOX", "UNTIL"), help=argparse.SUPPRESS)
    p.add_argument("--baseline-first", action="store_true", help="the baseline's run first (default: last)")
    entry.add_server_options(p)
    return p.parse_args()


def main() -> int:
    args = parse_args()
    if args.probe:  # the probes' own process (probe_process)
        url, sandbox_id, until_wall = args.probe
        return asyncio.run(probe_main(url, sandbox_id, float(until_wall)))
    return entry.run(main_async, args)


if __name__ == "__main__":
    sys.exit(main())
