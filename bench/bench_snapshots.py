#!/usr/bin/env python3
"""Snapshot benchmark: corral's checkpoints, forks and hibernation against ``podman
commit`` + ``podman run`` of the same state, in one run.

Run as root from the repository root:

    .venv/bin/python bench/bench_snapshots.py
    .venv/bin/python bench/bench_snapshots.py --iterations 20 --json out.json

Both systems start from the same base root filesystem and the same state: a sandbox
(container) in which ``--changed-mb`` MiB of random data were written. Then, each
``--iterations`` times, the systems taking turns:

    corral (HTTP API, runc runtime)           podman
    checkpoint: POST .../checkpoints, then    podman commit <ctr> (it returns when the
      poll the list until ``ready``           image is stored)
    fork: POST /sandboxes/from-checkpoint     podman run -d <committed image>
      (answers once the fork runs)            (returns once the container runs)
    (reference) create from the template:     podman run -d <base image>
      POST /sandboxes
    hibernate: POST .../hibernate             podman stop -t 0 (its disk is kept)
    wake to first exec: POST .../exec/run     podman start + podman exec true
      of ``true`` on the hibernated sandbox
      (the request wakes it)

and ``--burst`` forks of one checkpoint (image) at once, ``--rounds`` times: the wall
time of the burst and each fork's latency. Process memory is kept by neither (podman's
checkpoint needs CRIU, which this kernel does not run).

corral is a ``corral serve`` started for the run (runc, its own data dir, runc root and
network bridge; the base template from the benchmarks' cache). Everything made is
removed at the end: sandboxes, containers, committed and imported images, the data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from corral_target import DEFAULT_CACHE, CorralServer, ensure_template_cache, template_roots
from proc import run, run_sync
from reference import PODMAN_ULIMITS, import_rootfs, rootfs_uid_base
from stats import Summary, fmt_ms, render_table

TARGETS = {  # seconds, p50, from the issue
    "checkpoint to ready": 0.150,
    "fork to running": 0.100,
    "hibernate": 0.150,
    "wake to first exec": 0.100,
}
OP_TIMEOUT = 120.0


class Corral:
    name = "corral"

    def __init__(self, server: CorralServer) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"{server.url}/api", headers={"X-API-Key": server.api_key}, timeout=OP_TIMEOUT
        )
        self.sandboxes: set[str] = set()
        self.parent = ""
        self.checkpoint = ""

    async def _ok(self, response: Awaitable[httpx.Response]) -> dict[str, Any]:
        r = await response
        if r.status_code >= 400:
            raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    async def prepare(self, changed_mb: int) -> None:
        self.parent = (await self._ok(self.client.post("/sandboxes", json={"timeout": 0})))["sandboxID"]
        self.sandboxes.add(self.parent)
        script = f"head -c {changed_mb * 1048576} /dev/urandom > /root/data.bin && sync"
        await self.exec(self.parent, script)

    async def exec(self, sandbox_id: str, script: str) -> None:
        body = {"cmd": "sh", "args": ["-c", script]}
        result = await self._ok(self.client.post(f"/sandboxes/{sandbox_id}/exec/run", json=body))
        if result["exitCode"] != 0:
            raise RuntimeError(f"exec failed: {result}")

    async def checkpoint_ready(self) -> float:
        started = time.perf_counter()
        made = await self._ok(
            self.client.post(f"/sandboxes/{self.parent}/checkpoints", json={"name": secrets.token_hex(4)})
        )
        while True:
            listed = await self._ok(self.client.get(f"/sandboxes/{self.parent}/checkpoints"))
            status = {c["id"]: c["status"] for c in listed}[made["id"]]  # type: ignore[index]
            if status != "processing":
                break
            await asyncio.sleep(0.002)
        took = time.perf_counter() - started
        if status != "ready":
            raise RuntimeError(f"checkpoint {made['id']} is {status}")
        if self.checkpoint:
            await self._ok(self.client.delete(f"/sandboxes/{self.parent}/checkpoints/{self.checkpoint}"))
        self.checkpoint = made["id"]
        return took

    async def create(self) -> tuple[float, str]:
        started = time.perf_counter()
        made = await self._ok(self.client.post("/sandboxes", json={"timeout": 0}))
        self.sandboxes.add(made["sandboxID"])
        return time.perf_counter() - started, made["sandboxID"]

    async def fork(self) -> tuple[float, str]:
        started = time.perf_counter()
        made = await self._ok(
            self.client.post(f"/sandboxes/from-checkpoint/{self.checkpoint}", json={"timeout": 0})
        )
        took = time.perf_counter() - started
        self.sandboxes.add(made["sandboxID"])
        return took, made["sandboxID"]

    async def hibernate(self, sandbox_id: str) -> float:
        started = time.perf_counter()
        await self._ok(self.client.post(f"/sandboxes/{sandbox_id}/hibernate"))
        return time.perf_counter() - started

    async def wake_exec(self, sandbox_id: str) -> float:
        started = time.perf_counter()
        await self._ok(self.client.post(f"/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"}))
        return time.perf_counter() - started

    async def remove(self, sandbox_id: str) -> None:
        await self.client.delete(f"/sandboxes/{sandbox_id}")
        self.sandboxes.discard(sandbox_id)

    async def close(self) -> None:
        for sandbox_id in list(self.sandboxes):
            await self.remove(sandbox_id)
        await self.client.aclose()


class Podman:
    name = "podman"

    def __init__(self, rootfs: Path) -> None:
        self.token = f"corral-bench-snap-{secrets.token_hex(4)}"
        self.base = f"localhost/{self.token}:base"
        self.rootfs = rootfs
        self.parent = ""
        self.image = ""
        self.images: list[str] = []

    def _run_args(self, image: str) -> list[str]:
        return ["--label", f"corral-bench={self.token}", *PODMAN_ULIMITS, image]

    async def prepare(self, changed_mb: int) -> None:
        await asyncio.to_thread(import_rootfs, self.rootfs, self.base, rootfs_uid_base(self.rootfs))
        self.images.append(self.base)
        self.parent = await self._start(self.base)
        script = f"head -c {changed_mb * 1048576} /dev/urandom > /root/data.bin && sync"
        (await run(["podman", "exec", self.parent, "sh", "-c", script], timeout=OP_TIMEOUT)).check()

    async def _start(self, image: str) -> str:
        done = await run(
            ["podman", "run", "-d", *self._run_args(image), "sleep", "infinity"], timeout=OP_TIMEOUT
        )
        return done.check().stdout.decode().strip()

    async def checkpoint_ready(self) -> float:
        image = f"localhost/{self.token}:snap-{secrets.token_hex(4)}"
        started = time.perf_counter()
        (await run(["podman", "commit", "-q", self.parent, image], timeout=OP_TIMEOUT)).check()
        took = time.perf_counter() - started
        if self.image:
            run_sync(["podman", "rmi", "-f", self.image], timeout=OP_TIMEOUT)
            self.images.remove(self.image)
        self.image = image
        self.images.append(image)
        return took

    async def create(self) -> tuple[float, str]:
        started = time.perf_counter()
        cid = await self._start(self.base)
        return time.perf_counter() - started, cid

    async def fork(self) -> tuple[float, str]:
        started = time.perf_counter()
        cid = await self._start(self.image)
        return time.perf_counter() - started, cid

    async def hibernate(self, cid: str) -> float:
        started = time.perf_counter()
        (await run(["podman", "stop", "-t", "0", cid], timeout=OP_TIMEOUT)).check()
        return time.perf_counter() - started

    async def wake_exec(self, cid: str) -> float:
        started = time.perf_counter()
        (await run(["podman", "start", cid], timeout=OP_TIMEOUT)).check()
        (await run(["podman", "exec", cid, "true"], timeout=OP_TIMEOUT)).check()
        return time.perf_counter() - started

    async def remove(self, cid: str) -> None:
        (await run(["podman", "rm", "-f", "-t", "0", cid], timeout=OP_TIMEOUT)).check()

    async def close(self) -> None:
        listed = run_sync(["podman", "ps", "-aq", "--filter", f"label=corral-bench={self.token}"])
        ids = listed.stdout.decode().split()
        if ids:
            run_sync(["podman", "rm", "-f", "-t", "0", *ids], timeout=OP_TIMEOUT)
        for image in self.images:
            run_sync(["podman", "rmi", "-f", image], timeout=OP_TIMEOUT)


System = Corral | Podman


async def measure(systems: list[System], args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    samples: dict[str, dict[str, list[float]]] = {s.name: {} for s in systems}

    def add(system: System, metric: str, value: float) -> None:
        samples[system.name].setdefault(metric, []).append(value)

    for i in range(args.iterations):
        turn = systems[i % len(systems) :] + systems[: i % len(systems)]
        for system in turn:
            add(system, "checkpoint to ready", await system.checkpoint_ready())
            took, child = await system.fork()
            add(system, "fork to running", took)
            add(system, "hibernate", await system.hibernate(child))
            add(system, "wake to first exec", await system.wake_exec(child))
            await system.remove(child)
            took, plain = await system.create()
            add(system, "create from the template (reference)", took)
            await system.remove(plain)
    for r in range(args.rounds):
        turn = systems[r % len(systems) :] + systems[: r % len(systems)]
        for system in turn:
            started = time.perf_counter()
            forks = await asyncio.gather(*(system.fork() for _ in range(args.burst)))
            add(system, f"{args.burst} forks at once (wall)", time.perf_counter() - started)
            for took, child in forks:
                add(system, f"one of {args.burst} forks at once", took)
            await asyncio.gather(*(system.remove(child) for _, child in forks))
    return samples


def report(samples: dict[str, dict[str, list[float]]]) -> str:
    metrics = list(dict.fromkeys(m for per in samples.values() for m in per))
    rows = []
    for metric in metrics:
        for name, per in samples.items():
            s = Summary.of(per.get(metric, []))
            target = TARGETS.get(metric)
            verdict = "" if target is None or name != "corral" else ("ok" if s.p50 <= target else "MISSED")
            rows.append(
                [
                    metric,
                    name,
                    str(s.count),
                    fmt_ms(s.p50),
                    fmt_ms(s.p90),
                    fmt_ms(s.maximum),
                    fmt_ms(target) if target and name == "corral" else "",
                    verdict,
                ]
            )
    return render_table(["metric", "system", "n", "p50 ms", "p90 ms", "max ms", "target", ""], rows)


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changed-mb", type=int, default=10)
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="data dir holding the base template"
    )
    parser.add_argument("--no-podman", action="store_true")
    parser.add_argument("--no-network", action="store_true", help="sandboxes with loopback only")
    parser.add_argument("--json", type=Path, help="write the samples (seconds) here")
    args = parser.parse_args()

    templates = ensure_template_cache(args.cache)
    server = CorralServer(templates)
    bridge = "corralbs0"  # fixed: its ready namespaces are reused run after run
    server.extra_env.update(
        CORRAL_NETWORK_BRIDGE=bridge,
        CORRAL_NETWORK_POOL="10.215.0.0/16",
        CORRAL_NETWORK_NFLOG_GROUP="215",
        CORRAL_NETWORK_STATE_DIR=str(server.data_dir / "network"),
    )
    if args.no_network:
        server.extra_env["CORRAL_NETWORK_ENABLED"] = "false"
    systems: list[System] = []
    try:
        await server.start()
        systems.append(Corral(server))
        if not args.no_podman:
            systems.append(Podman(template_roots(templates)[0]))
        for system in systems:
            await system.prepare(args.changed_mb)
        samples = await measure(systems, args)
    finally:
        cleanups: list[Callable[[], Awaitable[None]]] = [s.close for s in systems]
        for cleanup in cleanups:
            try:
                await cleanup()
            except (OSError, RuntimeError, httpx.HTTPError) as exc:  # keep cleaning
                print(f"cleanup: {exc!r}", file=sys.stderr)
        server.stop()
    print(
        f"\n{args.changed_mb} MiB changed per sandbox; {args.iterations} iterations; "
        f"{args.rounds} rounds of {args.burst} forks at once\n"
    )
    print(report(samples))
    if args.json:
        args.json.write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
