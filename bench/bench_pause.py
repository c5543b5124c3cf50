#!/usr/bin/env python3
"""Pause and resume against hibernate and wake, in one run, on one corral.

Run as root from the repository root:

    .venv/bin/python bench/bench_pause.py
    .venv/bin/python bench/bench_pause.py --iterations 50 --hold-mb 64 --json out.json

A ``corral serve`` is started for the run (runc, its own data dir, runc root and
network; the base template from the benchmarks' cache), with two sandboxes.

First, CPU: in one sandbox a shell spins (``while :; do :; done``); ``--iterations``
times it is paused, the kernel's cpuacct of its cgroup read, read again ``--paused-s``
seconds later (a frozen cgroup gains none), and it is resumed. That sandbox is then
killed: a spinner would use the sandbox's whole CPU quota, and the group's throttling
would delay the latencies below by up to a CFS period.

Then latency, in the other sandbox, where a process holds ``--hold-mb`` MiB of memory
it wrote (memory to keep), ``--iterations`` times, through the HTTP API as a client
sees it:

    exec (reference)               POST .../exec/run of ``true`` on the running sandbox
    pause                          POST .../pause
    memory while paused            its cgroup's memory charge then (kept)
    resume to first exec           POST .../exec/run of ``true`` on the paused sandbox
                                   (the request resumes it)
    explicit resume                POST .../pause, then POST .../resume (timed alone)
    hibernate                      POST .../hibernate
    wake to first exec             POST .../exec/run of ``true`` on the hibernated
                                   sandbox (the request wakes it; its processes are
                                   new: the holder is started again, untimed)

The report gives p50, p90 and max of each, the load average before and after,
corral's p50 of resume to first exec against its 10 ms target, and the resume's own
part: each resume to first exec less the exec just before it (on a busy machine the
exec itself moves by tens of ms; the difference much less). Everything is bounded (a
deadline per request) and removed at the end: the sandboxes, the server, its data dir
and network.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from corral_target import DEFAULT_CACHE, CorralServer, Network, ensure_template_cache
from stats import Summary, fmt_ms, render_table

from corral.runtime import cgroups
from corral.runtime.runc import CGROUP_PARENT

NETWORK = Network("cpaus0", "10.238.0.0/16", 238)  # its own, apart from any other corral here
OP_TIMEOUT = 60.0
TARGET_RESUME_EXEC_S = 0.010
PAUSED_CPU = "CPU while paused"  # seconds of CPU time, not of latency
PAUSED_MEMORY = "memory while paused"  # MiB
SPIN = "setsid nice -n 19 sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 &"  # niced: the agent comes first
HOLD = (
    'setsid python3 -c \'import time; b = bytearray({n} << 20); b[::4096] = b"x" * len(b[::4096]); '
    "time.sleep(1e9)' </dev/null >/dev/null 2>&1 &"
)


class Sandbox:
    """One sandbox of the server, through its HTTP API."""

    def __init__(self, server: CorralServer) -> None:
        self.client = httpx.AsyncClient(
            base_url=f"{server.url}/api", headers={"X-API-Key": server.api_key}, timeout=OP_TIMEOUT
        )
        self.id = ""

    async def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = await self.client.request(method, f"/sandboxes{path}", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    async def create(self) -> None:
        self.id = (await self.call("POST", "", {"timeout": 0}))["sandboxID"]

    async def run(self, script: str) -> None:
        result = await self.call("POST", f"/{self.id}/exec/run", {"cmd": "sh", "args": ["-c", script]})
        if result["exitCode"] != 0:
            raise RuntimeError(f"exec failed: {result}")

    async def timed(self, method: str, path: str, body: Any = None) -> float:
        started = time.perf_counter()
        await self.call(method, f"/{self.id}{path}", body)
        return time.perf_counter() - started

    async def status(self) -> str:
        return str((await self.call("GET", f"/{self.id}"))["status"])

    async def close(self) -> None:
        """Delete it; idempotent."""
        if self.id and not self.client.is_closed:
            await self.client.delete(f"/sandboxes/{self.id}")
        await self.client.aclose()


def usage(sandbox_id: str) -> tuple[float, int]:
    """CPU seconds and memory bytes its cgroup was charged, as the kernel counts them."""
    found = cgroups.usage(CGROUP_PARENT, sandbox_id)
    if found is None:
        raise RuntimeError(f"sandbox {sandbox_id} has no cgroup")
    return found.cpu_seconds, found.memory_bytes or 0


async def hold(sandbox: Sandbox, hold_mb: int) -> None:
    """Start the holder, and wait until the memory is held and the holder sleeps."""
    await sandbox.run(HOLD.format(n=hold_mb))
    deadline = time.monotonic() + OP_TIMEOUT
    while usage(sandbox.id)[1] < hold_mb << 20:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the holder never held {hold_mb} MiB")
        await asyncio.sleep(0.01)
    cpu = -1.0
    while cpu != (cpu := usage(sandbox.id)[0]):  # nothing runs in it any more
        if time.monotonic() > deadline:
            raise RuntimeError("the holder never went to sleep")
        await asyncio.sleep(0.05)


async def measure(spinner: Sandbox, sandbox: Sandbox, args: argparse.Namespace) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}

    def add(metric: str, value: float) -> None:
        samples.setdefault(metric, []).append(value)

    await spinner.run(SPIN)
    for _ in range(args.iterations):
        await spinner.timed("POST", "/pause")
        cpu, _ = usage(spinner.id)
        await asyncio.sleep(args.paused_s)  # the window the CPU is counted over
        add(PAUSED_CPU, usage(spinner.id)[0] - cpu)
        await spinner.timed("POST", "/resume")
    await spinner.close()

    ok = {"cmd": "true"}
    await hold(sandbox, args.hold_mb)
    for _ in range(args.iterations):
        add("exec (reference)", await sandbox.timed("POST", "/exec/run", ok))
        add("pause", await sandbox.timed("POST", "/pause"))
        add(PAUSED_MEMORY, usage(sandbox.id)[1] / 2**20)
        add("resume to first exec", await sandbox.timed("POST", "/exec/run", ok))
        if await sandbox.status() != "running":
            raise RuntimeError("the exec did not resume the sandbox")
        await sandbox.timed("POST", "/pause")
        add("explicit resume", await sandbox.timed("POST", "/resume"))
        add("hibernate", await sandbox.timed("POST", "/hibernate"))
        add("wake to first exec", await sandbox.timed("POST", "/exec/run", ok))
        await hold(sandbox, args.hold_mb)  # its processes are new: start the holder again
    return samples


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def report(samples: dict[str, list[float]]) -> str:
    rows = []
    for metric, values in samples.items():
        if metric in (PAUSED_CPU, PAUSED_MEMORY):
            continue
        s = Summary.of(values)
        target = TARGET_RESUME_EXEC_S if metric == "resume to first exec" else None
        verdict = "" if target is None else ("ok" if s.p50 <= target else "MISSED")
        rows.append(
            [
                metric,
                str(s.count),
                fmt_ms(s.p50),
                fmt_ms(s.p90),
                fmt_ms(s.maximum),
                fmt_ms(target) if target else "",
                verdict,
            ]
        )
    own = Summary.of(
        [r - e for r, e in zip(samples["resume to first exec"], samples["exec (reference)"], strict=True)]
    )
    cpu, memory = samples[PAUSED_CPU], samples[PAUSED_MEMORY]
    return render_table(["metric", "n", "p50 ms", "p90 ms", "max ms", "target", ""], rows) + (
        f"\nthe resume's own part (each resume to first exec less the exec just before it): "
        f"p50 {fmt_ms(own.p50)} ms, p90 {fmt_ms(own.p90)} ms"
        f"\nCPU time the sandbox gained while paused: at most {max(cpu) * 1e9:.0f} ns in {len(cpu)} pauses"
        f"\nits memory charge while paused: {min(memory):.1f}-{max(memory):.1f} MiB (kept)"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--hold-mb", type=int, default=64, help="memory a process in the sandbox holds")
    parser.add_argument("--paused-s", type=float, default=0.2, help="how long CPU is counted while paused")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="data dir holding the base template"
    )
    parser.add_argument("--json", type=Path, help="write the samples (seconds) here")
    args = parser.parse_args()

    templates = ensure_template_cache(args.cache)
    server = CorralServer(templates, network=NETWORK)
    made: list[Sandbox] = []
    before = load()
    try:
        await server.start()
        made = [Sandbox(server), Sandbox(server)]
        for sandbox in made:
            await sandbox.create()
        samples = await measure(made[0], made[1], args)
    finally:
        for sandbox in made:
            try:
                await sandbox.close()
            except httpx.HTTPError as exc:  # the server stops and cleans up anyway
                print(f"cleanup: {exc!r}", file=sys.stderr)
        server.stop()
    print(
        f"\n{args.iterations} iterations; {args.hold_mb} MiB held in the sandbox; "
        f"CPU of a spinning one counted over {args.paused_s:g} s paused\nload average before: {before}; after: {load()}; "
        f"{os.cpu_count()} CPUs\n"
    )
    print(report(samples))
    if args.json:
        args.json.write_text(json.dumps(samples, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
