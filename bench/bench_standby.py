#!/usr/bin/env python3
"""Standby sandboxes under a mixed-template workload, and the create when none is ready.

Run as root from the repository root:

    .venv/bin/python bench/bench_standby.py                         # the mix, the fallback
    .venv/bin/python bench/bench_standby.py --baseline 6cced11~1    # and that commit's fallback

The mix: one ``corral serve`` (a network of its own; standbys within
``--standby-memory-mb``) takes ``--creates`` creates, one every ``--interval`` seconds,
each of a template drawn from ``--mix`` and of limits drawn from ``--limits`` (seeded:
the same sequence every run). Each sandbox runs ``true`` once and lives until
``--live`` creates later, then it is killed. A create is a hit when
``corral_standby_claims_total{result="hit"}`` went up during it (one create at a time,
so it is exact). Printed: the hit rate over all and per template and limits, the first
``--warmup`` creates apart (the demand is learnt from them), and the create latency
(POST to its answer) of hits and of misses.

The fallback: servers with no standby (this tree's; with ``--baseline REV`` also REV's,
``bench/baseline.py``) take turns at ``--fallback`` creates of ``base``: create timed,
then a first ``true`` timed, then a kill.

Templates come from the benchmarks' cache (``/var/tmp/corral-bench-cache``), built
there once if missing. Everything the run made is removed at the end: sandboxes, the
servers' data dirs and networks, the baseline's worktree.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from baseline import Worktree
from corral_target import (
    DEFAULT_CACHE,
    HEAD,
    Code,
    CorralServer,
    Network,
    ensure_template_cache,
    template_root,
)
from stats import Summary, fmt_ms, render_table

NETWORK = Network("cstby0", "10.246.0.0/16", 246)
BASELINE_NETWORK = Network("cstbb0", "10.247.0.0/16", 247)
LIMITS = {  # name -> create fields
    "default": {},
    "small": {"memoryMB": 256},
    "big": {"cpuCount": 2, "memoryMB": 1024},
    "disk": {"diskMB": 1024},
}
HIT = 'corral_standby_claims_total{result="hit"}'


@dataclass
class Create:
    template: str
    limits: str
    seconds: float
    hit: bool
    warmup: bool


@dataclass
class Fallback:
    name: str
    create: list[float] = field(default_factory=list)
    first_exec: list[float] = field(default_factory=list)


def weights(text: str, known: set[str] | None = None) -> dict[str, int]:
    """``a=5,b=3`` as {a: 5, b: 3}."""
    found = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        if known is not None and name not in known:
            raise SystemExit(f"unknown {name!r}: one of {', '.join(sorted(known))}")
        found[name] = int(weight or 1)
    return found


class Api:
    def __init__(self, server: CorralServer) -> None:
        self.server = server
        self.client = httpx.AsyncClient(
            base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=120
        )

    async def metric(self, name: str) -> float:
        text = (await self.client.get("/metrics")).text
        line = next((line for line in text.splitlines() if line.startswith(name + " ")), None)
        return float(line.split()[1]) if line else 0.0

    async def create(self, template: str, limits: dict[str, int]) -> tuple[str, float]:
        started = time.perf_counter()
        answer = await self.client.post(
            "/api/sandboxes", json={"templateID": template, "timeout": 600, **limits}
        )
        seconds = time.perf_counter() - started
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"create {template} {limits}: {answer.status_code} {answer.text[:300]}")
        return str(answer.json()["sandboxID"]), seconds

    async def true(self, sandbox_id: str) -> float:
        started = time.perf_counter()
        answer = await self.client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"})
        seconds = time.perf_counter() - started
        if answer.status_code != 200 or answer.json().get("exitCode") != 0:
            raise RuntimeError(f"exec in {sandbox_id}: {answer.status_code} {answer.text[:300]}")
        return seconds

    async def kill(self, sandbox_id: str) -> None:
        await self.client.delete(f"/api/sandboxes/{sandbox_id}")

    async def close(self) -> None:
        await self.client.aclose()


async def started(server: CorralServer, servers: list[CorralServer]) -> Api:
    servers.append(server)  # stopped whatever happens
    print(f"starting {server.code.name} serve on {server.url}", flush=True)
    await server.start()
    return Api(server)


async def mix(args: argparse.Namespace, templates: Path, servers: list[CorralServer]) -> list[Create]:
    server = CorralServer(templates, args.workdir, network=NETWORK)
    server.extra_env["CORRAL_STANDBY_MEMORY_MB"] = str(args.standby_memory_mb)
    server.extra_env["CORRAL_MAX_PROMISED_DISK_MB"] = "0"  # sparse disks: this machine's is small
    api = await started(server, servers)
    rng = random.Random(args.seed)
    mix_weights, limit_weights = weights(args.mix), weights(args.limits, set(LIMITS))
    done: list[Create] = []
    live: list[str] = []
    try:
        await asyncio.sleep(args.settle)  # the default templates' standbys start
        for i in range(args.creates):
            template = rng.choices(list(mix_weights), list(mix_weights.values()))[0]
            limits = rng.choices(list(limit_weights), list(limit_weights.values()))[0]
            hits = await api.metric(HIT)
            sandbox_id, seconds = await api.create(template, LIMITS[limits])
            hit = await api.metric(HIT) > hits
            live.append(sandbox_id)
            await api.true(sandbox_id)
            done.append(Create(template, limits, seconds, hit, i < args.warmup))
            print(
                f"  {i + 1:3d} {template:8s} {limits:8s} {fmt_ms(seconds):>8s} ms {'hit' if hit else 'miss'}"
            )
            while len(live) > args.live:
                await api.kill(live.pop(0))
            await asyncio.sleep(args.interval)
    finally:
        for sandbox_id in live:
            await api.kill(sandbox_id)
        await api.close()
        server.stop()
    return done


async def fallback(
    args: argparse.Namespace, templates: Path, servers: list[CorralServer], baseline: Code | None
) -> list[Fallback]:
    apis = []
    for code, network in ((HEAD, NETWORK), (baseline, BASELINE_NETWORK)):
        if code is None:
            continue
        server = CorralServer(templates, args.workdir, code=code, network=network)
        server.extra_env["CORRAL_STANDBY_SANDBOXES"] = "0"
        apis.append((await started(server, servers), Fallback(code.name)))
    try:
        for api, _ in apis:  # a warm-up each: caches, the disk image's format
            sandbox_id, _ = await api.create("base", {})
            await api.true(sandbox_id)
            await api.kill(sandbox_id)
        for i in range(args.fallback):
            for api, result in apis[i % len(apis) :] + apis[: i % len(apis)]:  # taking turns
                sandbox_id, seconds = await api.create("base", {})
                result.create.append(seconds)
                result.first_exec.append(await api.true(sandbox_id))
                await api.kill(sandbox_id)
    finally:
        for api, _ in apis:
            await api.close()
    return [result for _, result in apis]


def report_mix(creates: list[Create]) -> None:
    measured = [c for c in creates if not c.warmup]
    print(f"\n== the mix: {len(creates)} creates, the first {len(creates) - len(measured)} as warm-up ==")
    groups: dict[str, list[Create]] = defaultdict(list)
    for c in measured:
        groups["all"].append(c)
        groups[f"template {c.template}"].append(c)
        groups[f"limits {c.limits}"].append(c)
    rows = []
    for name, group in sorted(groups.items(), key=lambda kv: (kv[0] != "all", kv[0])):
        hits = [c.seconds for c in group if c.hit]
        misses = [c.seconds for c in group if not c.hit]
        rows.append(
            [
                name,
                str(len(group)),
                f"{100 * len(hits) / len(group):.0f}%",
                fmt_ms(Summary.of(hits).p50) if hits else "-",
                fmt_ms(Summary.of(hits).p90) if hits else "-",
                fmt_ms(Summary.of(misses).p50) if misses else "-",
                str(len(misses)),
            ]
        )
    print(
        render_table(["creates", "n", "hit rate", "hit p50 ms", "hit p90 ms", "miss p50 ms", "misses"], rows)
    )
    warm = [c for c in creates if c.warmup]
    if warm:
        print(f"warm-up: {sum(c.hit for c in warm)}/{len(warm)} hits")


def report_fallback(results: list[Fallback]) -> None:
    print("\n== the fallback: creates of base with no standby, taking turns ==")
    rows = []
    for r in results:
        create, first = Summary.of(r.create), Summary.of(r.first_exec)
        rows.append([r.name, str(create.count), fmt_ms(create.p50), fmt_ms(create.p90), fmt_ms(first.p50)])
    print(render_table(["server", "n", "create p50 ms", "create p90 ms", "first exec p50 ms"], rows))
    if len(results) == 2:
        ratio = Summary.of(results[0].create).p50 / Summary.of(results[1].create).p50
        print(f"create p50 of {results[0].name} / {results[1].name}: {ratio:.2f}x")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mix", default="base=5,python=3,nodejs=2", help="templates and weights")
    p.add_argument("--limits", default="default=4,small=2,big=2,disk=2", help=f"of {', '.join(LIMITS)}")
    p.add_argument("--creates", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10, help="first creates not counted (10)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between creates (0.5)")
    p.add_argument("--live", type=int, default=6, help="sandboxes kept live at once (6)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds before the first create (5)")
    p.add_argument("--standby-memory-mb", type=int, default=4096, help="the standbys' budget (4096: 8)")
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--fallback", type=int, default=20, help="creates each with no standby (20; 0: none)")
    p.add_argument("--baseline", help="also run this revision's fallback creates")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    return p.parse_args()


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs")
    for name in weights(args.mix):
        templates = ensure_template_cache(DEFAULT_CACHE, name)
    template_root(DEFAULT_CACHE, HEAD)
    servers: list[CorralServer] = []
    worktree = Worktree(args.baseline, args.workdir) if args.baseline else None
    try:
        baseline = worktree.add() if worktree is not None else None
        if baseline is not None:
            template_root(DEFAULT_CACHE, baseline)
        creates = await mix(args, templates, servers) if args.creates else []
        results = await fallback(args, templates, servers, baseline) if args.fallback else []
    finally:
        for server in servers:
            server.stop()
        if worktree is not None:
            worktree.remove()
    if creates:
        report_mix(creates)
    if results:
        report_fallback(results)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
