#!/usr/bin/env python3
"""Where corral's time goes: a traced ``corral serve`` and per-step wall times.

    .venv/bin/python bench/profile_create.py [--iterations 20] [--concurrency 1]
    .venv/bin/python bench/profile_create.py --cprofile       # and the event loop's CPU
    .venv/bin/python bench/profile_create.py --py-spy out.svg # and a py-spy flame graph

The server runs with a sandbox network of its own (``--no-network``: loopback only;
removed at the end) and no standby sandboxes (``--standby N``: N of each), so a create
takes the full path a create takes when none is ready: the fallback path.

Starts the server as a child of this script with every function of corral's runtime,
network, services, store, auth and agent client wrapped in a span (see ``tracing.py``;
corral's code is not changed), drives ``--iterations`` create / exec / kill cycles over
HTTP (``--concurrency`` at a time), stops the server and prints, for each service
operation, the median wall time of each step under it, in call order, next to what the
HTTP client saw. With one at a time it also prints the time outside every traced call:
routing, validation, serialisation, the HTTP exchange and the client.

``--cprofile`` runs the server under cProfile as well and prints the functions that
took the most CPU on the event loop's thread (own time): what is serial there. Spans
say where the wall time goes, cProfile where the loop's CPU goes; ``--py-spy FILE``
records the server with py-spy (every thread, idle ones too) into a flame graph.

Spans cost a few microseconds each, so steps that are called very often look a little
slower than they are; the client-side numbers of ``bench_lifecycle.py`` are the
reference, this is the breakdown.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import itertools
import os
import pkgutil
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from corral_target import DEFAULT_CACHE, CorralServer, Network, ensure_template_cache
from stats import Summary, fmt_ms, render_table
from tracing import Span, aggregate, load

TRACED = (
    "corral.runtime",
    "corral.network",
    "corral.services",
    "corral.store",
    "corral.auth",
    "corral.agent",
)
UNTRACED = ("corral.agent.sandbox_agent",)
SPANS_ENV = "CORRAL_BENCH_SPANS"
CPROFILE_ENV = "CORRAL_BENCH_CPROFILE"
NETWORK = Network("cprof0", "10.243.0.0/16", 243)


def child() -> None:
    """The traced server: import all of corral, wrap, serve with settings from env."""
    import tracing

    import corral

    for info in pkgutil.walk_packages(corral.__path__, "corral."):
        if info.name.startswith(UNTRACED) or ".migrations" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:  # noqa: BLE001 - a module we cannot import is simply not traced
            print(f"profile: not tracing {info.name}: {exc}", file=sys.stderr)
    out = Path(os.environ[SPANS_ENV]).open("a", buffering=1 << 16)  # noqa: SIM115 - lives as long as the server
    count = tracing.install(TRACED, out, skip=UNTRACED)
    print(f"profile: tracing {count} functions", file=sys.stderr, flush=True)
    from corral.api.server import serve
    from corral.settings import Settings

    profile_path = os.environ.get(CPROFILE_ENV)
    profiler = cProfile.Profile() if profile_path else None
    # uvicorn raises the SIGTERM it stopped on again once it is done: exit through the
    # ``finally`` below then, not by the default action
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if profiler is not None:
            profiler.enable()
        serve(Settings())  # type: ignore[call-arg]
    finally:
        if profiler is not None and profile_path:
            profiler.disable()
            profiler.dump_stats(profile_path)
        out.close()


def print_cprofile(path: Path, top: int) -> None:
    """The functions with the most own CPU time in the server (the event loop's thread:
    cProfile sees only the thread that enabled it)."""
    print(f"\n== cProfile of the server: top {top} by own time (tottime) ==")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)


async def drive(server: CorralServer, iterations: int, concurrency: int) -> list[tuple[str, float, float]]:
    """Warm up, then run the cycles (``concurrency`` at a time: all creates, then all
    execs, then all kills); return (operation, start, end) client windows."""
    windows: list[tuple[str, float, float]] = []
    headers = {"X-API-Key": server.api_key}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120, limits=limits) as client:

        async def call(op: str, method: str, url: str, body: object | None, record: bool) -> httpx.Response:
            start = time.monotonic()
            response = await client.request(method, url, json=body)
            end = time.monotonic()
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
            if record:
                windows.append((op, start, end))
            return response

        async def create(record: bool) -> str:
            created = await call("create", "POST", "/api/sandboxes", {"templateID": "base"}, record)
            return str(created.json()["sandboxID"])

        async def execute(sandbox_id: str, record: bool) -> None:
            await call("exec", "POST", f"/api/sandboxes/{sandbox_id}/exec/run", {"cmd": "true"}, record)

        async def kill(sandbox_id: str, record: bool) -> None:
            await call("kill", "DELETE", f"/api/sandboxes/{sandbox_id}", None, record)

        rounds = max(1, iterations // concurrency)
        for i in range(rounds + 1):
            record = i >= 1  # the first round warms up
            ids = await asyncio.gather(*(create(record) for _ in range(concurrency)))
            for _ in range(2):
                await asyncio.gather(*(execute(sandbox_id, record) for sandbox_id in ids))
            await asyncio.gather(*(kill(sandbox_id, record) for sandbox_id in ids))
    return windows


def report(spans: dict[int, Span], windows: list[tuple[str, float, float]], min_share: float) -> None:
    roots = [s for s in spans.values() if s.parent is None or s.parent not in spans]
    for op in ("create", "exec", "kill"):
        op_windows = [(a, b) for o, a, b in windows if o == op]
        client = Summary.of([b - a for a, b in op_windows])
        inside: dict[str, list[Span]] = {}
        for root in roots:
            if any(a <= root.start and root.end <= b for a, b in op_windows):
                inside.setdefault(root.name, []).append(root)
        print(
            f"\n== {op}: client saw p50 {fmt_ms(client.p50)} ms, p90 {fmt_ms(client.p90)} ms "
            f"over {client.count} calls"
        )
        if not _overlapping(op_windows):
            outside = []
            for a, b in op_windows:
                traced = sum(r.duration for r in roots if a <= r.start and r.end <= b)
                outside.append((b - a) - traced)
            print(
                f"   outside every traced call (HTTP, routing, validation, serialisation, the client): "
                f"p50 {fmt_ms(Summary.of(outside).p50)} ms"
            )
        for name, group in sorted(inside.items(), key=lambda kv: -sum(s.duration for s in kv[1])):
            if len(group) < max(1, len(op_windows) // 2):
                continue
            if Summary.of([s.duration for s in group]).p50 < 0.0001:
                continue  # bookkeeping calls of a few microseconds
            rows = []
            for stats in aggregate(group, min_share):
                depth = len(stats.path) - 1
                median = Summary.of(stats.totals)
                rows.append(
                    [
                        "  " * depth + stats.path[-1],
                        f"{len(stats.totals)}/{len(group)}",
                        f"{stats.calls / len(group):.1f}",
                        fmt_ms(median.p50),
                        fmt_ms(median.p90),
                        fmt_ms(Summary.of(stats.first_offset).p50),
                    ]
                )
            print(render_table(["step", "in", "calls", "p50 ms", "p90 ms", "starts at ms"], rows))


def _overlapping(windows: list[tuple[float, float]]) -> bool:
    ordered = sorted(windows)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=20, help="sandboxes to create, after a warm-up (20)")
    p.add_argument("--concurrency", type=int, default=1, help="creates (then execs, kills) at once (1)")
    p.add_argument("--template-cache", type=Path, help=f"default {DEFAULT_CACHE}/templates")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--min-share", type=float, default=0.01, help="hide steps under this share (0.01)")
    p.add_argument("--keep-spans", type=Path, help="copy the raw spans (JSON lines) here")
    p.add_argument("--standby", type=int, default=0, help="standby sandboxes of each template (0: none)")
    p.add_argument("--no-network", action="store_true", help="sandboxes with loopback only")
    p.add_argument("--cprofile", action="store_true", help="also cProfile the server's event loop")
    p.add_argument("--top", type=int, default=25, help="cProfile functions to print (25)")
    p.add_argument("--py-spy", type=Path, help="also record the server with py-spy into this SVG")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


async def main_async(args: argparse.Namespace) -> int:
    templates = args.template_cache or ensure_template_cache()
    command = [sys.executable, str(Path(__file__).resolve()), "--child"]
    network = None if args.no_network else NETWORK
    server = CorralServer(templates, args.workdir, command=command, network=network)
    fd, name = tempfile.mkstemp(prefix="corral-bench-spans-", suffix=".jsonl", dir=args.workdir)
    os.close(fd)
    spans_path = Path(args.keep_spans or name)
    server.extra_env[SPANS_ENV] = str(spans_path)
    server.extra_env["CORRAL_STANDBY_SANDBOXES"] = str(args.standby)
    # any --concurrency: the per-org cap, the node's promises and the API rate limit lifted
    server.extra_env.update(
        CORRAL_MAX_LIVE_SANDBOXES_PER_ORG="0",
        CORRAL_MAX_PROMISED_MEMORY_MB="0",
        CORRAL_MAX_PROMISED_DISK_MB="0",
        CORRAL_RATE_LIMIT_API="0",
    )
    profile_path = Path(name).with_suffix(".prof")
    if args.cprofile:
        server.extra_env[CPROFILE_ENV] = str(profile_path)
    spy: subprocess.Popen[bytes] | None = None
    try:
        await server.start()
        if args.py_spy and server.pid is not None:
            binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            argv = [binary, "record", "--idle", "--threads", "-o", str(args.py_spy), "--pid", str(server.pid)]
            spy = subprocess.Popen(argv)  # noqa: ASYNC220 - started once, waited for after the run
        windows = await drive(server, args.iterations, args.concurrency)
    finally:
        server.stop()  # py-spy ends with the server and writes its graph
        if spy is not None:
            spy.wait(60)
        if spans_path != Path(name):
            Path(name).unlink(missing_ok=True)
    try:
        report(load(spans_path), windows, args.min_share)
        if args.cprofile:
            print_cprofile(profile_path, args.top)
    finally:
        if spans_path == Path(name):
            spans_path.unlink(missing_ok=True)
        profile_path.unlink(missing_ok=True)
    return 0


def main() -> int:
    args = parse_args()
    if args.child:
        child()
        return 0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
