#!/usr/bin/env python3
"""Sandbox lifecycle benchmark: corral against raw runc and podman, in one run.

Run as root from the repository root:

    .venv/bin/python bench/bench_lifecycle.py                 # starts its own corral serve
    .venv/bin/python bench/bench_lifecycle.py --url http://127.0.0.1:8080 --api-key ek_...
    .venv/bin/python bench/bench_lifecycle.py --baseline 828f089     # and that commit's corral

With ``--baseline REV`` the run also starts REV's ``corral serve`` (``bench/baseline.py``:
a worktree of REV, removed at the end), with its own data dir, network and base template
built by REV's code, as one more system (``corral@<rev>``) taking its turns like the
others; the summary gives corral's ratio to it as to every reference.

For each system, on the same base root filesystem (corral's own base template, also
for the references; a baseline uses its own revision's):

* sequential lifecycle, ``--iterations`` times: create, first exec of ``true``, kill;
* ``--concurrency`` at once, ``--rounds`` times: all creates together, then every
  first exec together, then every kill together;
* exec round trip of ``true``, ``--exec-calls`` calls on one running sandbox;
* memory per idle sandbox: ``--memory-sandboxes`` idle sandboxes, their processes'
  PSS (and RSS, cgroup charge, host-wide change) divided by their count.

Within each phase the systems take turns, one iteration (or batch) each, with the
first of each turn rotating, so load from outside the benchmark on a shared machine
falls on all of them alike; the report gives the load average and how busy the CPUs
were, to judge how much such load there was.

Every run is bounded (``--max-seconds``, a deadline per operation) and removes
everything it made: sandboxes, containers, bundles, mounts, cgroups, the imported
podman image, the temporary corral data dirs, the servers' networks (bridge, nftables
tables, namespaces), the baseline's worktree. ``docs/benchmarks.md`` has results and
what they mean; ``bench/profile_create.py`` breaks corral's time down by step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import secrets
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import entry
from baseline import Worktree
from corral_target import (
    DEFAULT_CACHE,
    HEAD,
    CorralServer,
    CorralTarget,
    Network,
    template_root,
    template_roots,
)
from memory import MemoryReport, host_used, meminfo, mib
from proc import run_sync
from reference import SECCOMP_CHOICES, Podman, RawRunc
from stats import Summary, fmt_ms, fmt_ratio, render_table
from target import Target

T = TypeVar("T")
OP_TIMEOUT = 120.0
EXEC_BATCH = 20
# Each started server's own network, apart from any other corral on the machine.
NETWORK = Network("cbench0", "10.241.0.0/16", 241)
BASELINE_NETWORK = Network("cbase0", "10.242.0.0/16", 242)

# Targets from the issue, on a 2-core machine.
TARGET_CREATE_P50 = 0.060
TARGET_EXEC_P50 = 0.005
TARGET_CREATE_EXEC_P50 = 0.070
TARGET_MEMORY = 15 * 1024 * 1024


@dataclass
class Result:
    target: str
    label: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    memory: MemoryReport | None = None
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, value: float) -> None:
        self.samples.setdefault(metric, []).append(value)

    def summary(self, metric: str) -> Summary:
        return Summary.of(self.samples.get(metric, []))


class Budget:
    """The run's deadline: phases stop starting new iterations once it has passed."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> bool:
        return time.monotonic() < self.end


async def timed(op: Awaitable[T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = await asyncio.wait_for(op, OP_TIMEOUT)
    return value, time.perf_counter() - start


async def kill_quietly(target: Target, ids: list[str]) -> None:
    for sandbox_id in ids:
        try:
            await asyncio.wait_for(target.kill(sandbox_id), OP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - best effort; close() sweeps the rest
            print(f"  ! kill {sandbox_id}: {exc}", file=sys.stderr)


async def phase_warmup(target: Target, result: Result) -> None:
    for _ in range(2):
        sandbox_id = await asyncio.wait_for(target.create(), OP_TIMEOUT)
        try:
            await asyncio.wait_for(target.exec_true(sandbox_id), OP_TIMEOUT)
        finally:
            await kill_quietly(target, [sandbox_id])


async def cycle_sequential(target: Target, result: Result) -> None:
    """One create, first exec, kill."""
    sandbox_id, created = await timed(target.create())
    try:
        _, first = await timed(target.exec_true(sandbox_id))
    except BaseException:
        await kill_quietly(target, [sandbox_id])
        raise
    _, killed = await timed(target.kill(sandbox_id))
    result.add("create", created)
    result.add("first_exec", first)
    result.add("create_exec", created + first)
    result.add("kill", killed)


async def round_concurrent(target: Target, result: Result, concurrency: int) -> None:
    """``concurrency`` creates at once, then every first exec at once, then every kill."""
    start = time.perf_counter()
    created = await asyncio.gather(
        *(timed(target.create()) for _ in range(concurrency)), return_exceptions=True
    )
    ok = [c for c in created if not isinstance(c, BaseException)]
    ids = [sandbox_id for sandbox_id, _ in ok]
    try:
        for outcome in created:
            if isinstance(outcome, BaseException):
                raise outcome
        execs = await asyncio.gather(*(timed(target.exec_true(i)) for i in ids))
        wall = time.perf_counter() - start
    finally:
        kills = await asyncio.gather(*(timed(target.kill(i)) for i in ids), return_exceptions=True)
    for (_, create_s), (_, exec_s) in zip(ok, execs, strict=True):
        result.add("conc_create", create_s)
        result.add("conc_first_exec", exec_s)
        result.add("conc_create_exec", create_s + exec_s)
    for k in kills:
        if isinstance(k, BaseException):
            raise k
        result.add("conc_kill", k[1])
    result.add("conc_wall", wall)


async def exec_batch(target: Target, result: Result, sandbox_id: str, calls: int) -> None:
    """``calls`` round trips of ``true`` (and, for corral, of one authenticated GET)."""
    for _ in range(calls):
        _, rtt = await timed(target.exec_true(sandbox_id))
        result.add("exec_rtt", rtt)
    if isinstance(target, CorralTarget):
        for _ in range(calls):
            _, rtt = await timed(target.get(sandbox_id))
            result.add("http_get", rtt)


async def create_for_exec(target: Target, ids: dict[str, str]) -> None:
    sandbox_id = await asyncio.wait_for(target.create(), OP_TIMEOUT)
    ids[target.name] = sandbox_id
    await asyncio.wait_for(target.exec_true(sandbox_id), OP_TIMEOUT)


async def one_shot(target: Target, result: Result) -> None:
    if isinstance(target, Podman):
        _, elapsed = await timed(target.one_shot())
        result.add("one_shot", elapsed)


Step = Callable[[Target, Result], Awaitable[None]]


async def interleaved(
    ready: list[tuple[Target, Result]], phase: str, count: int, step: Step, budget: Budget
) -> None:
    """Run ``step`` ``count`` times for every system, taking turns (the first system of
    each turn rotates), so load from outside the benchmark falls on all of them alike.
    A system whose step fails drops out of this phase with a note."""
    failed: set[str] = set()
    for i in range(count):
        if not budget.left():
            for _, r in ready:
                r.notes.append(f"{phase}: stopped after {i} of {count} turns at the run's deadline")
            return
        turn = ready[i % len(ready) :] + ready[: i % len(ready)]
        for t, r in turn:
            if t.name in failed:
                continue
            try:
                await step(t, r)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - noted in the report
                failed.add(t.name)
                r.notes.append(f"{phase} failed: {type(exc).__name__}: {exc}")
                print(f"  ! {t.name} {phase} failed: {exc}", file=sys.stderr, flush=True)
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()


async def phase_memory(target: Target, result: Result, count: int, settle: float) -> None:
    server_pss = target.server_pss if isinstance(target, CorralTarget) else None
    before_host = host_used()
    before_info = meminfo()
    before_server = server_pss() if server_pss else None
    ids: list[str] = []
    try:
        for _ in range(count):
            ids.append(await asyncio.wait_for(target.create(), OP_TIMEOUT))
        for sandbox_id in ids:
            await asyncio.wait_for(target.exec_true(sandbox_id), OP_TIMEOUT)
        await asyncio.sleep(settle)
        items = await target.memory(ids)
        after_host = host_used()
        after_info = meminfo()
        info_delta = {k: after_info[k] - before_info.get(k, 0) for k in after_info}
        after_server = server_pss() if server_pss else None
        server_delta = (
            (after_server - before_server)
            if (after_server is not None and before_server is not None)
            else None
        )
        result.memory = MemoryReport.average(items, after_host - before_host, server_delta, info_delta)
    finally:
        await kill_quietly(target, ids)


async def phase_one_shot(target: Podman, result: Result, iterations: int, budget: Budget) -> None:
    for _ in range(iterations):
        if not budget.left():
            return
        _, elapsed = await timed(target.one_shot())
        result.add("one_shot", elapsed)


async def guarded(result: Result, phase: str, work: Awaitable[None]) -> None:
    """Run one phase; a failure is noted in the report and the run goes on."""
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001
        result.notes.append(f"{phase} failed: {type(exc).__name__}: {exc}")
        print(f"  ! {result.target} {phase} failed: {exc}", file=sys.stderr, flush=True)
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()


# -- report ---------------------------------------------------------------------------

ROWS = [
    ("create", "create (sequential)"),
    ("first_exec", "first exec (sequential)"),
    ("create_exec", "create + first exec (sequential)"),
    ("kill", "kill (sequential)"),
    ("conc_create", "create ({c} at once)"),
    ("conc_first_exec", "first exec ({c} at once)"),
    ("conc_create_exec", "create + first exec ({c} at once)"),
    ("conc_wall", "wall: {c} created + exec'd"),
    ("conc_kill", "kill ({c} at once)"),
    ("exec_rtt", "exec `true` round trip"),
    ("one_shot", "one-shot `run --rm <img> true`"),
    ("http_get", "GET /api/sandboxes/{{id}} (HTTP floor)"),
]


def summary_table(results: list[Result], concurrency: int, markdown: bool) -> str:
    header = ["metric (ms)"]
    for r in results:
        header += [f"{r.target} p50", f"{r.target} p90"]
    corral = next((r for r in results if r.target == "corral"), None)
    refs = [r for r in results if r.target != "corral"]
    if corral is not None:
        header += [f"corral/{r.target}" for r in refs]
    rows: list[list[str]] = []
    for key, title in ROWS:
        if not any(r.samples.get(key) for r in results):
            continue
        row = [title.format(c=concurrency)]
        for r in results:
            s = r.summary(key)
            row += [fmt_ms(s.p50), fmt_ms(s.p90)]
        if corral is not None:
            row += [fmt_ratio(corral.summary(key).p50, r.summary(key).p50) for r in refs]
        rows.append(row)
    mem_rows = [
        ("memory/idle sandbox, PSS (MiB)", "pss"),
        ("memory/idle sandbox, RSS (MiB)", "rss"),
        ("memory/idle sandbox, cgroup (MiB)", "cgroup_usage"),
    ]
    if any(r.memory for r in results):
        for title, attr in mem_rows:
            row = [title]
            for r in results:
                value = getattr(r.memory, attr) if r.memory else None
                row += [mib(value), ""]
            if corral is not None:
                c = getattr(corral.memory, attr) if corral.memory else None
                for r in refs:
                    v = getattr(r.memory, attr) if r.memory else None
                    row.append(f"{c / v:.2f}x" if c and v else "-")
            rows.append(row)
    return render_table(header, rows, markdown)


def detail_table(results: list[Result], concurrency: int, markdown: bool) -> str:
    header = ["system", "metric", "n", "min", "p50", "p90", "p99", "max", "mean"]
    rows: list[list[str]] = []
    for r in results:
        for key, title in ROWS:
            s = r.summary(key)
            if s.count == 0:
                continue
            rows.append(
                [
                    r.target,
                    title.format(c=concurrency),
                    str(s.count),
                    fmt_ms(s.minimum),
                    fmt_ms(s.p50),
                    fmt_ms(s.p90),
                    fmt_ms(s.p99),
                    fmt_ms(s.maximum),
                    fmt_ms(s.mean),
                ]
            )
    return render_table(header, rows, markdown, left=2)


def memory_breakdown(results: list[Result]) -> str:
    lines = []
    for r in results:
        if r.memory is None:
            continue
        names = ", ".join(f"{n} {mib(v)}" for n, v in sorted(r.memory.by_name.items(), key=lambda kv: -kv[1]))
        extra = ""
        if r.memory.control_plane_delta is not None:
            extra = f"; control plane PSS growth per sandbox {mib(r.memory.control_plane_delta)} MiB"
        lines.append(
            f"{r.target}: {r.memory.count} idle, {r.memory.processes:.1f} processes each; "
            f"PSS by process (MiB): {names}{extra}"
        )
        if r.memory.meminfo_delta:
            moved = ", ".join(f"{k} {mib(v)}" for k, v in r.memory.meminfo_delta.items())
            lines.append(
                f"  host-wide change per sandbox (MiB; everything else running moves it too): "
                f"used {mib(r.memory.host_delta)}; {moved}"
            )
    return "\n".join(lines)


def targets_table(results: list[Result], markdown: bool) -> str:
    corral = next((r for r in results if r.target == "corral"), None)
    if corral is None:
        return ""
    checks = [
        ("create p50", corral.summary("create").p50, TARGET_CREATE_P50, fmt_ms, "ms"),
        ("exec round trip p50", corral.summary("exec_rtt").p50, TARGET_EXEC_P50, fmt_ms, "ms"),
        ("create + first exec p50", corral.summary("create_exec").p50, TARGET_CREATE_EXEC_P50, fmt_ms, "ms"),
        (
            "memory per idle sandbox (PSS)",
            corral.memory.pss if corral.memory else float("nan"),
            TARGET_MEMORY,
            mib,
            "MiB",
        ),
    ]
    rows = []
    for name, value, goal, fmt, unit in checks:
        verdict = "-" if math.isnan(value) else ("met" if value <= goal else "NOT met")
        rows.append([name, f"{fmt(value)} {unit}", f"<= {fmt(goal)} {unit}", verdict])
    return render_table(["target", "corral", "goal", "verdict"], rows, markdown)


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def machine() -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        try:
            return run_sync(argv, timeout=20).stdout.decode().splitlines()[0]
        except Exception:  # noqa: BLE001
            return "unavailable"

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "runc": first_line(["runc", "--version"]),
        "podman": first_line(["podman", "--version"]),
        "python": platform.python_version(),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=30, help="sequential create/exec/kill cycles (30)")
    p.add_argument("--concurrency", type=int, default=10, help="sandboxes created at once (10)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the concurrent phase (3)")
    p.add_argument("--exec-calls", type=int, default=200, help="exec round trips on one sandbox (200)")
    p.add_argument("--memory-sandboxes", type=int, default=10, help="idle sandboxes for memory (10)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before memory is read (2)")
    p.add_argument("--url", help="a running corral server (default: start one for this run)")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also start REV's corral serve (a git worktree) and measure it beside this tree's",
    )
    p.add_argument("--api-key", default=os.environ.get("CORRAL_API_KEY"), help="API key for --url")
    p.add_argument(
        "--runc-root",
        type=Path,
        default=Path("/run/corral/runc"),
        help="runc state dir of the server at --url (for memory)",
    )
    p.add_argument(
        "--template-cache",
        type=Path,
        help=f"templates dir to reuse (default {DEFAULT_CACHE}/templates, built once if absent)",
    )
    p.add_argument(
        "--rootfs", type=Path, help="root for the references (default: corral's base template root)"
    )
    p.add_argument(
        "--ref-seccomp",
        choices=SECCOMP_CHOICES,
        default="corral",
        help="seccomp filter of the raw runc reference: corral's own (default), containers' default, none",
    )
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where temporary dirs go")
    p.add_argument("--skip-corral", action="store_true")
    p.add_argument("--skip-runc", action="store_true")
    p.add_argument("--skip-podman", action="store_true")
    p.add_argument("--max-seconds", type=float, default=1200.0, help="deadline of the whole run (1200)")
    p.add_argument("--markdown", action="store_true", help="print tables as markdown")
    p.add_argument("--json", type=Path, help="write raw samples and summaries here")
    p.add_argument("--server-log", type=Path, help="keep the started server's log here")
    return p.parse_args(argv)


def resolve_templates(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """The templates dir the servers use, and this tree's base root in it when a server
    is started for the run (built if it is not: the cache keeps a build per digest, so
    it may hold a baseline's beside it)."""
    if args.template_cache is not None:
        return Path(args.template_cache), None
    if (args.skip_corral or args.url) and not args.baseline:
        cache = DEFAULT_CACHE / "templates"
        return (cache if cache.exists() else None), None
    return DEFAULT_CACHE / "templates", template_root(DEFAULT_CACHE, HEAD)


async def start_server(server: CorralServer, servers: list[CorralServer], targets: list[Target]) -> None:
    """Start ``server`` (listed first, so it is stopped whatever happens) and add its target."""
    servers.append(server)
    print(f"starting {server.code.name} serve on {server.url} (data dir {server.data_dir})", flush=True)
    await server.start()
    targets.append(
        CorralTarget(
            server.url, server.api_key, server.runc_root, server_pid=server.pid, name=server.code.name
        )
    )


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    budget = Budget(args.max_seconds)
    token = f"cb{secrets.token_hex(3)}"
    templates, head_root = resolve_templates(args)
    rootfs: Path | None = args.rootfs or head_root
    if rootfs is None and templates is not None and template_roots(templates):
        rootfs = template_roots(templates)[0]
    if rootfs is None and not (args.skip_runc and args.skip_podman):
        print(
            "no root for the references: give --rootfs, or --template-cache with a built base",
            file=sys.stderr,
        )
        return 2

    info = machine()
    busy_start = cpu_times()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    if rootfs is not None:
        print(f"root filesystem: {rootfs}", flush=True)

    servers: list[CorralServer] = []
    worktree = Worktree(args.baseline, args.workdir) if args.baseline else None
    targets: list[Target] = []
    results: list[Result] = []
    try:
        if not args.skip_corral:
            if args.url:
                if not args.api_key:
                    print("--url needs --api-key (or CORRAL_API_KEY)", file=sys.stderr)
                    return 2
                targets.append(CorralTarget(args.url, args.api_key, args.runc_root))
            else:
                assert templates is not None
                await start_server(CorralServer(templates, args.workdir, network=NETWORK), servers, targets)
        if worktree is not None:
            assert templates is not None
            code = worktree.add()
            print(f"{code.name}: its own base root {template_root(templates.parent, code)}", flush=True)
            baseline = CorralServer(templates, args.workdir, code=code, network=BASELINE_NETWORK)
            await start_server(baseline, servers, targets)
        if not args.skip_runc:
            assert rootfs is not None
            targets.append(RawRunc(rootfs, token, seccomp=args.ref_seccomp))
        if not args.skip_podman:
            assert rootfs is not None
            targets.append(Podman(rootfs, token))

        ready: list[tuple[Target, Result]] = []
        for t in targets:
            result = Result(t.name, t.label)
            results.append(result)
            print(f"[{t.name}] setup + warm-up", flush=True)
            try:
                await t.setup()
                await phase_warmup(t, result)
                ready.append((t, result))
            except Exception as exc:  # noqa: BLE001
                result.notes.append(f"setup failed: {type(exc).__name__}: {exc}")
                print(f"  ! {t.name} setup failed: {exc}", file=sys.stderr, flush=True)

        names = ", ".join(t.name for t, _ in ready)
        print(f"sequential: {args.iterations} x create, first exec, kill; taking turns: {names}", flush=True)
        await interleaved(ready, "sequential", args.iterations, cycle_sequential, budget)
        print(f"concurrent: {args.rounds} x {args.concurrency} at once", flush=True)
        await interleaved(
            ready, "concurrent", args.rounds, lambda t, r: round_concurrent(t, r, args.concurrency), budget
        )
        print(f"exec round trip: {args.exec_calls} calls in batches of {EXEC_BATCH}", flush=True)
        exec_ids: dict[str, str] = {}
        for t, r in ready:
            await guarded(r, "exec set-up", create_for_exec(t, exec_ids))
        exec_ready = [(t, r) for t, r in ready if t.name in exec_ids]
        try:
            await interleaved(
                exec_ready,
                "exec",
                -(-args.exec_calls // EXEC_BATCH),
                lambda t, r: exec_batch(t, r, exec_ids[t.name], EXEC_BATCH),
                budget,
            )
        finally:
            for t, _ in exec_ready:
                await kill_quietly(t, [exec_ids[t.name]])
        if any(isinstance(t, Podman) for t, _ in ready):
            print(f"one-shot: {args.iterations} x podman run --rm", flush=True)
            await interleaved(
                [(t, r) for t, r in ready if isinstance(t, Podman)],
                "one-shot",
                args.iterations,
                one_shot,
                budget,
            )
        for t, r in ready:
            print(f"[{t.name}] memory of {args.memory_sandboxes} idle sandboxes", flush=True)
            await guarded(r, "memory", phase_memory(t, r, args.memory_sandboxes, args.settle))
    finally:
        for t in targets:
            try:
                await t.close()
            except Exception as exc:  # noqa: BLE001
                print(f"  ! cleanup of {t.name}: {exc}", file=sys.stderr)
        for server in servers:
            keep = args.server_log
            if keep is not None and server.code is not HEAD:
                keep = keep.with_name(f"{keep.stem}-{server.code.name.replace('@', '-')}{keep.suffix}")
            try:
                server.stop(keep_log=keep)
            except Exception as exc:  # noqa: BLE001 - the others are still to be removed
                print(f"  ! stopping {server.code.name}: {exc}", file=sys.stderr)
        if worktree is not None:
            worktree.remove()

    info["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    busy_end = cpu_times()
    busy = (busy_end[0] - busy_start[0]) / max(1, busy_end[1] - busy_start[1])
    info["cpu_busy"] = f"{busy:.0%}"
    print()
    print(
        f"load average at start {info['loadavg']}, at end {info['loadavg_end']}; "
        f"CPUs busy {info['cpu_busy']} of the run (this benchmark included)"
    )
    for r in results:
        print(f"- {r.target}: {r.label}")
        for note in r.notes:
            print(f"  note: {note}")
    print()
    print(summary_table(results, args.concurrency, args.markdown))
    print()
    print(detail_table(results, args.concurrency, args.markdown))
    print()
    print(memory_breakdown(results))
    check = targets_table(results, args.markdown)
    if check:
        print()
        print(check)
    if args.json is not None:
        write_json(args.json, info, results)
    return 0 if all(not r.notes for r in results) else 1


def write_json(path: Path, info: dict[str, str], results: list[Result]) -> None:
    doc: dict[str, Any] = {"machine": info, "results": []}
    for r in results:
        doc["results"].append(
            {
                "target": r.target,
                "label": r.label,
                "notes": r.notes,
                "samples": r.samples,
                "summaries": {k: Summary.of(v).__dict__ for k, v in r.samples.items()},
                "memory": r.memory.__dict__ if r.memory else None,
            }
        )
    path.write_text(json.dumps(doc, indent=1))


def main() -> int:
    return entry.run(main_async, parse_args())


if __name__ == "__main__":
    sys.exit(main())
