#!/usr/bin/env python3
"""Density benchmark: one node holding many live idle sandboxes (issue 17, item 1).

Run as root from the repository root:

    .venv/bin/python bench/bench_density.py                       # steps 0 250 500 1000
    .venv/bin/python bench/bench_density.py --steps 0 50 100      # a small run

It starts its own ``corral serve`` (a temporary data dir, its own network ``cdens0``
on 10.247.0.0/16, the base template from the benchmarks' cache) with the per-org cap,
the node's promises and the API rate limit lifted (``CORRAL_MAX_LIVE_SANDBOXES_PER_ORG``,
``CORRAL_MAX_PROMISED_{MEMORY,DISK}_MB``, ``CORRAL_RATE_LIMIT_API``: documented
settings; and ``CORRAL_DEFAULT_TIMEOUT_S=0``, so idle sandboxes stay live, not paused), then fills the node with idle sandboxes of the default template up to each
step and, at each step, measures:

* host memory per live sandbox: the host-wide change of used memory since step 0
  (``/proc/meminfo``: total - free - buffers - cached - reclaimable slab, as free(1)
  counts it; so the agents, runc's leftovers, network devices, disk images' metadata,
  mounts and kernel objects alike) divided by the sandboxes live, with the change of
  unreclaimable slab, page tables and kernel stacks apart, and the PSS of a sample of
  the sandboxes' processes;
* how busy the machine is with that many idle sandboxes (over 2 s);
* create p50 and exec p50: ``--probes`` sandboxes created one after another, each
  running ``true`` once and killed (one more sandbox at this count);
* list, get and ``/metrics`` latency (p50 of ``--probes`` calls each), the list also
  paged (``?limit=50``);

and at the last step: an exec in every live sandbox (``--exec-sample`` of them when
given), then a restart of the server (SIGTERM; the sandboxes outlive it) and the time
until its API answers again (start-up reconcile included) and every sandbox still
answers.

Bounded: ``--max-seconds`` for the whole run (the fill stops at the deadline, and the
report says where), a timeout per call. It removes everything it made, Ctrl-C
included: the server is stopped, then every container in its runc root deleted, every
mount under its data dir unmounted, its network (bridge, veths, namespaces, nftables
tables) and data dir removed (``corral_target.CorralServer.stop``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import entry
import httpx
from corral_target import CorralServer, CorralTarget, Network, ensure_template_cache
from machine import busy_share
from memory import host_used, meminfo, mib
from proc import CommandFailed
from stats import Summary, fmt_ms

OP_TIMEOUT = 120.0
NETWORK = Network("cdens0", "10.247.0.0/16", 247)
SETTINGS = {
    "CORRAL_MAX_LIVE_SANDBOXES_PER_ORG": "0",
    "CORRAL_MAX_PROMISED_MEMORY_MB": "0",
    "CORRAL_MAX_PROMISED_DISK_MB": "0",
    "CORRAL_RATE_LIMIT_API": "0",
    "CORRAL_DEFAULT_TIMEOUT_S": "0",  # idle stays live: no pause, no hibernation during the run
}


@dataclass
class Step:
    live: int
    memory_per_sandbox: float | None = None
    slab_per_sandbox: float | None = None
    kernel_per_sandbox: float | None = None  # page tables + kernel stacks
    server_pss: float | None = None
    pss: float | None = None  # of a sample of sandboxes' processes, per sandbox
    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def p50(self, metric: str) -> str:
        values = self.samples.get(metric)
        return fmt_ms(Summary.of(values).p50) if values else "-"


async def timed(call: object) -> float:
    start = time.perf_counter()
    await asyncio.wait_for(call, OP_TIMEOUT)  # type: ignore[arg-type]
    return time.perf_counter() - start


MAX_FAILURES = 20


async def fill(
    target: CorralTarget, live: list[str], count: int, concurrency: int, deadline: float, failures: list[str]
) -> None:
    """Create idle sandboxes until ``count`` are live, ``concurrency`` at once; a failed
    create is recorded in ``failures`` (the fill goes on, up to MAX_FAILURES)."""

    async def worker() -> None:
        while len(live) + pending[0] < count and time.monotonic() < deadline:
            if len(failures) >= MAX_FAILURES:
                raise CommandFailed(f"{len(failures)} creates failed: {failures[:3]}")
            pending[0] += 1
            try:
                sandbox_id = await asyncio.wait_for(target.create(), OP_TIMEOUT)
            except (CommandFailed, httpx.HTTPError, TimeoutError) as exc:
                failures.append(f"at {len(live)} live: {exc!r}"[:300])
                continue
            finally:
                pending[0] -= 1
            live.append(sandbox_id)
            if len(live) % 50 == 0:
                print(f"  {len(live)} live", flush=True)

    pending = [0]
    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def probe(target: CorralTarget, step: Step, probes: int, live: list[str]) -> None:
    """One more sandbox at this count, ``probes`` times; and the read routes. (Back to
    back: on this machine a wait for quiet before each made every latency 1.5-3x at 0
    and at 1,000 live alike, the cost of waking idle CPUs.)"""
    for _ in range(probes):
        start = time.perf_counter()
        sandbox_id = await asyncio.wait_for(target.create(), OP_TIMEOUT)
        step.add("create", time.perf_counter() - start)
        try:
            step.add("exec", await timed(target.exec_true(sandbox_id)))
        finally:
            await asyncio.wait_for(target.kill(sandbox_id), OP_TIMEOUT)
    if live:
        for sandbox_id in random.sample(live, min(probes, len(live))):
            step.add("exec_existing", await timed(target.exec_true(sandbox_id)))
            step.add("get", await timed(target.get(sandbox_id)))
    client = target.client
    for _ in range(probes):
        step.add("list", await timed(_ok(client.get("/api/sandboxes"))))
        step.add("list_page", await timed(_ok(client.get("/api/sandboxes", params={"limit": 50}))))
        step.add("metrics", await timed(_ok(client.get("/metrics"))))


async def _ok(request: object) -> None:
    response = await request  # type: ignore[misc]
    if response.status_code != 200:
        raise CommandFailed(f"{response.request.url}: {response.status_code} {response.text[:200]}")


def measure_memory(step: Step, base: dict[str, int], base_used: int, live: int, server: CorralServer) -> None:
    if live == 0:
        return
    now = meminfo()
    step.memory_per_sandbox = (host_used() - base_used) / live
    step.slab_per_sandbox = (now["SUnreclaim"] - base["SUnreclaim"]) / live
    step.kernel_per_sandbox = (
        now["PageTables"] - base["PageTables"] + now["KernelStack"] - base["KernelStack"]
    ) / live
    from memory import proc_memory

    mem = proc_memory(server.pid) if server.pid else None
    step.server_pss = mem.pss if mem else None


async def exec_all(target: CorralTarget, ids: list[str], concurrency: int = 16) -> tuple[int, list[str]]:
    """An exec of ``true`` in each; (answered, failures)."""
    queue = list(ids)
    failures: list[str] = []
    answered = 0

    async def worker() -> None:
        nonlocal answered
        while queue:
            sandbox_id = queue.pop()
            try:
                await asyncio.wait_for(target.exec_true(sandbox_id), OP_TIMEOUT)
                answered += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(f"{sandbox_id}: {exc}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answered, failures


async def restart(server: CorralServer, timeout: float) -> float:
    """SIGTERM the server, start it again on the same data dir and network; seconds
    until its API answers (the start-up reconcile is done before it listens)."""
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(server.process.wait, 60)
    start = time.perf_counter()
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(  # noqa: ASYNC220 - a fork, not a wait
            server.command,
            env=server.env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}) as client:
        while True:
            if server.process.poll() is not None:
                raise CommandFailed(f"corral serve exited {server.process.returncode}: {server.log_tail()}")
            try:
                if (await client.get("/api/sandboxes", timeout=5.0)).status_code == 200:
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            if time.perf_counter() - start > timeout:
                raise CommandFailed(f"corral serve did not answer in {timeout:.0f}s: {server.log_tail()}")
            await asyncio.sleep(0.05)


def report(steps: list[Step], notes: list[str]) -> str:
    lines = [
        (
            "| live | host MiB/sandbox | PSS MiB/sandbox | unreclaimable slab MiB/sandbox | page tables + stacks MiB/sandbox "
            "| server PSS MiB | create p50 | exec p50 (new) | exec p50 (existing) | get p50 | list p50 "
            "| list ?limit=50 p50 | /metrics p50 |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in steps:
        lines.append(
            f"| {s.live} | {mib(s.memory_per_sandbox)} | {mib(s.pss)} | {mib(s.slab_per_sandbox)} | "
            f"{mib(s.kernel_per_sandbox)} | {mib(s.server_pss)} | {s.p50('create')} | {s.p50('exec')} | "
            f"{s.p50('exec_existing')} | {s.p50('get')} | {s.p50('list')} | {s.p50('list_page')} | "
            f"{s.p50('metrics')} |"
        )
    return "\n".join(lines + [f"- {note}" for note in notes])


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.max_seconds
    templates = ensure_template_cache(args.template_cache)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    server = CorralServer(templates, args.workdir, network=NETWORK)
    server.extra_env.update(SETTINGS)
    server.extra_env.update(dict(pair.split("=", 1) for pair in args.env))
    steps: list[Step] = []
    notes: list[str] = []
    live: list[str] = []
    failures: list[str] = []
    target: CorralTarget | None = None
    try:
        await server.start()
        target = CorralTarget(server.url, server.api_key, server.runc_root, server_pid=server.pid)
        await target.setup()
        for _ in range(2):  # warm-up: templates, disk cache, pools
            sandbox_id = await target.create()
            await target.exec_true(sandbox_id)
            await target.kill(sandbox_id)
        await asyncio.sleep(args.settle)
        base, base_used = meminfo(), host_used()
        for count in args.steps:
            print(f"step {count}: filling ({len(live)} live)", flush=True)
            await fill(target, live, count, args.concurrency, deadline, failures)
            if len(live) < count:
                notes.append(f"the run's deadline stopped the fill at {len(live)} of {count}")
                count = len(live)
            await asyncio.sleep(args.settle)
            busy = await busy_share(2.0)
            notes.append(f"the machine with {len(live)} live (idle) sandboxes: {busy:.0%} busy over 2 s")
            step = Step(len(live))
            measure_memory(step, base, base_used, len(live), server)
            if live:
                sampled = await target.memory(random.sample(live, min(args.pss_sample, len(live))))
                step.pss = sum(m.pss for m in sampled) / len(sampled)
            await probe(target, step, args.probes, live)
            steps.append(step)
            print(report([step], []).splitlines()[-1], flush=True)
            if time.monotonic() > deadline:
                notes.append("the run's deadline ended the steps early")
                break
        if live:
            sample = (
                live if args.exec_sample is None else random.sample(live, min(args.exec_sample, len(live)))
            )
            start = time.perf_counter()
            answered, failures = await exec_all(target, sample)
            notes.append(
                f"exec in {answered} of {len(sample)} live sandboxes ({len(live)} live) answered, "
                f"in {time.perf_counter() - start:.1f} s"
                + (f"; failures: {failures[:5]}" if failures else "")
            )
            if not args.no_restart:
                await target.client.aclose()
                took = await restart(server, args.restart_timeout)
                reconciled = re.findall(
                    r"reconcile: .* in [0-9.]+ s", server.log_path.read_text(errors="replace")
                )
                target = CorralTarget(server.url, server.api_key, server.runc_root, server_pid=server.pid)
                answered, failures = await exec_all(target, sample)
                notes.append(
                    f"restart with {len(live)} live: API answering again {took:.2f} s after the process "
                    f"started (its imports, the store, the reconcile), the server's log says "
                    f"{reconciled[-1] if reconciled else 'no reconcile line'}; "
                    f"then exec in {answered} of {len(sample)} answered"
                    + (f"; failures: {failures[:5]}" if failures else "")
                )
    finally:
        if target is not None:
            target.live.update(live)
            print(f"removing {len(target.live)} sandboxes", flush=True)
            try:
                await asyncio.wait_for(_kill_all(target), 600)
            except Exception as exc:  # noqa: BLE001 - stop() sweeps the rest
                print(f"  ! kills: {exc!r}", file=sys.stderr)
            await target.client.aclose()
        server.stop(keep_log=args.server_log)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if failures:
        notes.append(f"{len(failures)} creates failed while filling: {failures[:5]}")
    print(report(steps, notes))
    return 0


async def _kill_all(target: CorralTarget, concurrency: int = 8) -> None:
    queue = list(target.live)

    async def worker() -> None:
        while queue:
            sandbox_id = queue.pop()
            try:
                await asyncio.wait_for(target.kill(sandbox_id), OP_TIMEOUT)
            except (CommandFailed, httpx.HTTPError, TimeoutError) as exc:
                print(f"  ! kill {sandbox_id}: {exc!r}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, nargs="+", default=[0, 250, 500, 1000])
    p.add_argument("--probes", type=int, default=10, help="creates, execs and reads measured per step")
    p.add_argument("--concurrency", type=int, default=4, help="creates at once while filling")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of quiet before each measurement")
    p.add_argument("--pss-sample", type=int, default=20, help="sandboxes whose processes' PSS is read")
    p.add_argument("--exec-sample", type=int, default=None, help="exec in this many at the end (all)")
    p.add_argument("--no-restart", action="store_true", help="skip the restart at the last step")
    p.add_argument("--restart-timeout", type=float, default=600.0)
    p.add_argument("--max-seconds", type=float, default=3000.0)
    entry.add_server_options(p)
    return p.parse_args()


def main() -> int:
    return entry.run(main_async, parse_args())


if __name__ == "__main__":
    sys.exit(main())
