#!/usr/bin/env python3
"""Burst benchmark: many creates at once through the API beside raw runc (issue 17,
item 2).

Run as root from the repository root:

    .venv/bin/python bench/bench_burst.py                  # bursts of 10, 50, 100
    .venv/bin/python bench/bench_burst.py --sizes 10 20    # smaller
    .venv/bin/python bench/bench_burst.py --sizes 100 --baseline c6e33bf   # and that revision

It starts its own ``corral serve`` (a temporary data dir, its own network ``cburst0`` on
10.248.0.0/16, the base template from the benchmarks' cache; the per-org cap, the
node's promises and the API rate limit lifted, the create queue as configured, see
``--env``). For each size N, taking turns with the first rotating:

* corral: N ``POST /api/sandboxes`` at once, each followed by ``POST
  .../exec/run {cmd: true}`` as soon as its create answers; per sandbox the time from
  the common start to its first command's answer (p50, p95), and the wall time until
  all N ran it. A 429 or 409 (a documented admission limit) is counted apart; any
  other failure is an error. 0.3 s into the burst, a second org ("rival", made with the
  local CLI) sends one create of its own: its time to a first command says whether
  the create queue lets it in ahead of the burst's queue (it should take about one
  turn, not the whole burst). The requests go through a lean HTTP/1.1 client
  (``http1.py``, kept-alive connections) so the client's own CPU, which the machine
  pays during the burst, is small beside the server's; ``--client httpx`` measures
  with httpx instead.
* raw runc: N of (overlay mount + hand-written config + ``runc run -d`` + ``runc exec
  true``) at once on the same root filesystem (corral's base template).

With ``--baseline REV`` the same is run again against REV's server (a ``git worktree``,
``bench/baseline.py``), each with its own raw runc bursts: a second phase after this
tree's (``--baseline-first``: before it), each ratio taken within its phase.

Then every sandbox and container is removed (not timed). The report gives the ratio of
the walls (target: corral <= 1.3x raw runc) and, per burst, the CPU time the whole
machine spent meanwhile (``/proc/stat``: every process, the kernel's work for them, and
anyone else's: read it with the load), in all and per sandbox: on 2 cores a burst is
CPU-bound, so its wall is about that CPU time over 2. Bounded by ``--max-seconds`` and a timeout
per call; everything made is removed, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import entry
import httpx
from baseline import Worktree
from corral_target import (
    HEAD,
    Code,
    CorralServer,
    CorralTarget,
    Network,
    ensure_template_cache,
    template_roots,
)
from http1 import Http1Client
from machine import busy_cpu_seconds, busy_share, quiet
from proc import CommandFailed
from reference import RawRunc
from stats import Summary, fmt_ms, fmt_ratio, percentile

OP_TIMEOUT = 300.0
RIVAL_DELAY_S = 0.3  # the burst's creates are queued by then
NETWORK = Network("cburst0", "10.248.0.0/16", 248)
SETTINGS = {
    "CORRAL_MAX_LIVE_SANDBOXES_PER_ORG": "0",
    "CORRAL_MAX_PROMISED_MEMORY_MB": "0",
    "CORRAL_MAX_PROMISED_DISK_MB": "0",
    "CORRAL_RATE_LIMIT_API": "0",
}


@dataclass
class Burst:
    system: str
    size: int
    ready: list[float] = field(default_factory=list)  # seconds from the start to a first command
    refused: list[str] = field(default_factory=list)  # 429/409 from a documented limit
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    rival: float | None = None  # another org's one create + first command, started into the burst
    cpu: float = 0.0  # CPU seconds the whole machine spent during the burst (every process)
    phase: int = 0  # which code's server (this tree's, a baseline's) the run was in
    turn: int = 0  # its place in --sizes: a corral burst is compared with raw runc's of its turn
    split: str = ""  # where the CPU went, a sandbox's share (split_line)
    busy: str = ""  # how busy the machine was, step by step (BusyTimeline)
    window: tuple[float, float] = (0.0, 0.0)  # CLOCK_MONOTONIC at its start and end (perf --time)

    def row(self) -> str:
        s = Summary.of(self.ready) if self.ready else None
        return (
            f"| {self.system} | {self.size} | {len(self.ready)} | {len(self.refused)} | {len(self.errors)} | "
            f"{fmt_ms(s.p50) if s else '-'} | {fmt_ms(percentile(self.ready, 95)) if s else '-'} | {fmt_ms(self.wall)} | "
            f"{self.cpu:.2f} | {fmt_ms(self.cpu / self.size)} | "
            f"{fmt_ms(self.rival) if self.rival is not None else '-'} |"
        )

    def window_line(self) -> str:
        """The burst's window on CLOCK_MONOTONIC, for ``perf record -k CLOCK_MONOTONIC``'s
        ``perf report --time START,END``: where the burst's own CPU went."""
        return f"  window (CLOCK_MONOTONIC s): {self.window[0]:.6f},{self.window[1]:.6f}"


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of process ``pid`` itself (every thread) and of its children it has
    reaped (``/proc/<pid>/stat``'s utime + stime, cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def cpu_parts(server_pid: int | None) -> dict[str, float]:
    """A snapshot of where the machine's CPU went so far: this process (the client), the
    programs it ran and reaped, the server and the programs it ran and reaped; the
    difference of two is a burst's split (what is left of the machine's: the
    sandboxes' own processes, the kernel's threads, anyone else)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    parts = {
        "machine": busy_cpu_seconds(),
        "client": me.ru_utime + me.ru_stime,
        "client's programs": kids.ru_utime + kids.ru_stime,
    }
    if server_pid is not None:
        parts["server"], parts["server's programs"] = process_cpu_seconds(server_pid)
    return parts


def split_line(size: int, before: dict[str, float], after: dict[str, float]) -> str:
    spent = {k: after[k] - before[k] for k in before}
    rest = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
    shown = [f"{k} {v / size * 1000:.1f}" for k, v in spent.items() if k != "machine"]
    return f"  CPU ms a sandbox: {', '.join(shown)}, the rest (sandboxes, kernel, others) {rest / size * 1000:.1f}"


class BusyTimeline:
    """The machine's busy share of its CPUs per ``step`` s while a burst runs: a burst is
    CPU-bound, so its idle steps are wall time the CPUs could have filled."""

    def __init__(self, step: float = 0.25) -> None:
        self.step = step
        self.shares: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _sample(self) -> None:
        while True:
            self.shares.append(await busy_share(self.step))

    def line(self) -> str:
        idle = sum(1 - share for share in self.shares) * self.step
        steps = " ".join(f"{share * 100:.0f}" for share in self.shares)
        return f"  busy % per {self.step} s: {steps} (idle in all: {idle:.2f} s of a CPU each)"


async def corral_burst(
    target: CorralTarget, client: Http1Client | httpx.AsyncClient, size: int, rival_key: str | None = None
) -> tuple[Burst, list[str], list[tuple[str, str]]]:
    burst = Burst("corral", size)
    made: list[str] = []
    rivals: list[tuple[str, str]] = []  # (rival key, sandbox id)
    parts = cpu_parts(target.server_pid)
    cpu_start = busy_cpu_seconds()
    start = time.perf_counter()
    mono_start = time.monotonic()

    async def rival() -> None:
        """Another org's single create, once the burst fills the create queue."""
        assert rival_key is not None
        await asyncio.sleep(RIVAL_DELAY_S)
        began = time.perf_counter()
        headers = {"X-API-Key": rival_key}
        response = await client.post("/api/sandboxes", json={"templateID": target.template}, headers=headers)
        if response.status_code not in (200, 201):
            burst.errors.append(f"rival create {response.status_code} {response.text[:200]}")
            return
        sandbox_id = str(response.json()["sandboxID"])
        rivals.append((rival_key, sandbox_id))
        ran = await client.post(
            f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"}, headers=headers
        )
        if ran.status_code != 200:
            burst.errors.append(f"rival exec {ran.status_code} {ran.text[:200]}")
            return
        burst.rival = time.perf_counter() - began

    async def one() -> None:
        response = await client.post("/api/sandboxes", json={"templateID": target.template})
        if response.status_code in (409, 429):
            burst.refused.append(f"{response.status_code} {response.text[:200]}")
            return
        if response.status_code not in (200, 201):
            burst.errors.append(f"create {response.status_code} {response.text[:200]}")
            return
        sandbox_id = str(response.json()["sandboxID"])
        made.append(sandbox_id)
        target.live.add(sandbox_id)  # removed by close() should the run end here
        ran = await client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"})
        if ran.status_code != 200 or ran.json().get("exitCode") != 0:
            burst.errors.append(f"exec {ran.status_code} {ran.text[:200]}")
            return
        burst.ready.append(time.perf_counter() - start)

    extra = [asyncio.wait_for(rival(), OP_TIMEOUT)] if rival_key else []
    async with BusyTimeline() as busy:
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(one(), OP_TIMEOUT) for _ in range(size)), *extra, return_exceptions=True
        )
    burst.busy = busy.line()
    burst.wall = time.perf_counter() - start
    burst.cpu = busy_cpu_seconds() - cpu_start
    burst.window = (mono_start, time.monotonic())
    burst.split = split_line(size, parts, cpu_parts(target.server_pid))
    burst.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return burst, made, rivals


def make_rival_key(server: CorralServer) -> str:
    """An owner key of a second org ("rival") in the server's store (the local CLI)."""
    env = server.env()
    data = ["--data-dir", str(server.data_dir)]
    subprocess.run(
        server.code.command("org", "create", "rival", *data), env=env, check=True, capture_output=True
    )
    made = subprocess.run(
        server.code.command("keys", "create", "--role", "owner", "--org", "rival", *data),
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return made.stdout.strip().splitlines()[-1].strip()


async def runc_burst(runc: RawRunc, size: int) -> tuple[Burst, list[str]]:
    burst = Burst("runc", size)
    made: list[str] = []
    parts = cpu_parts(None)
    cpu_start = busy_cpu_seconds()
    start = time.perf_counter()
    mono_start = time.monotonic()

    async def one() -> None:
        cid = await runc.create()
        made.append(cid)
        await runc.exec_true(cid)
        burst.ready.append(time.perf_counter() - start)

    async with BusyTimeline() as busy:
        outcomes = await asyncio.gather(
            *(asyncio.wait_for(one(), OP_TIMEOUT) for _ in range(size)), return_exceptions=True
        )
    burst.busy = busy.line()
    burst.wall = time.perf_counter() - start
    burst.cpu = busy_cpu_seconds() - cpu_start
    burst.window = (mono_start, time.monotonic())
    burst.split = split_line(size, parts, cpu_parts(None))
    burst.errors += [repr(o) for o in outcomes if isinstance(o, BaseException)]
    return burst, made


async def remove(kill: object, ids: list[str], concurrency: int = 8) -> None:
    queue = list(ids)

    async def worker() -> None:
        while queue:
            sandbox_id = queue.pop()
            try:
                await asyncio.wait_for(kill(sandbox_id), OP_TIMEOUT)  # type: ignore[operator]
            except (CommandFailed, httpx.HTTPError, TimeoutError) as exc:
                print(f"  ! remove {sandbox_id}: {exc!r}", file=sys.stderr)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def report(bursts: list[Burst], notes: list[str]) -> str:
    lines = [
        (
            "| system | at once | ran a first command | refused (429/409) | errors | p50 | p95 | wall "
            "| machine CPU s | CPU ms a sandbox | another org's create + first command, sent into the burst |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(b.row() for b in bursts),
        "",
        "| corral | at once | its wall / raw runc's wall in the same turn |",
        "|---|---:|---:|",
    ]
    for mine in (b for b in bursts if b.system != "runc"):
        theirs = [b for b in bursts if b.system == "runc" and (b.phase, b.turn) == (mine.phase, mine.turn)]
        if theirs:
            lines.append(f"| {mine.system} | {mine.size} | {fmt_ratio(mine.wall, theirs[0].wall)} |")
    for b in bursts:
        for text in (b.errors + b.refused)[:3]:
            notes.append(f"{b.system} {b.size}: {text}")
    return "\n".join(lines + [f"- {note}" for note in notes])


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.max_seconds
    templates = ensure_template_cache(args.template_cache)
    rootfs = template_roots(templates)[0]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    bursts: list[Burst] = []
    notes: list[str] = []
    worktree = Worktree(args.baseline, args.workdir or Path("/var/tmp")) if args.baseline else None
    try:
        codes = [HEAD]
        if worktree is not None:
            baseline = worktree.add()
            codes = [baseline, HEAD] if args.baseline_first else [HEAD, baseline]
        for phase, code in enumerate(codes):
            await run_phase(args, phase, code, templates, rootfs, deadline, bursts, notes)
    finally:
        if worktree is not None:
            worktree.remove()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(report(bursts, notes))
    return 1 if any(b.errors for b in bursts) else 0


async def run_phase(
    args: argparse.Namespace,
    phase: int,
    code: Code,
    templates: Path,
    rootfs: Path,
    deadline: float,
    bursts: list[Burst],
    notes: list[str],
) -> None:
    """One code's server, its bursts beside raw runc's in turns, then everything removed."""
    server = CorralServer(templates, args.workdir, code=code, network=NETWORK)
    server.extra_env.update(SETTINGS)
    server.extra_env.update(dict(pair.split("=", 1) for pair in args.env))
    runc = RawRunc(rootfs, f"cu{secrets.token_hex(3)}")
    target: CorralTarget | None = None
    try:
        await server.start()
        target = CorralTarget(server.url, server.api_key, server.runc_root, server_pid=server.pid)
        await target.client.aclose()
        target.client = httpx.AsyncClient(
            base_url=target.url,
            headers={"X-API-Key": server.api_key},
            timeout=OP_TIMEOUT,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        )
        await target.setup()
        client = (
            target.client
            if args.client == "httpx"
            else Http1Client(target.url, {"X-API-Key": server.api_key})
        )
        rival_key = await asyncio.to_thread(make_rival_key, server)
        await runc.setup()
        for _ in range(2):  # warm-up of both
            sandbox_id = await target.create()
            await target.exec_true(sandbox_id)
            await target.kill(sandbox_id)
            cid = await runc.create()
            await runc.exec_true(cid)
            await runc.kill(cid)
        for turn, size in enumerate(args.sizes):
            if time.monotonic() > deadline:
                notes.append(f"the run's deadline stopped {code.name} before {size} at once")
                break
            order = [code.name, "runc"] if turn % 2 == 0 else ["runc", code.name]
            for system in order:
                await asyncio.sleep(args.settle)
                print(await quiet(args.quiet_busy, args.quiet_timeout), flush=True)
                print(f"{size} at once: {system}", flush=True)
                if system == "runc":
                    burst, made = await runc_burst(runc, size)
                    burst.phase, burst.turn = phase, turn
                    print(burst.row(), burst.split, burst.busy, burst.window_line(), sep="\n", flush=True)
                    await remove(runc.kill, made)
                else:
                    spy = start_py_spy(args.py_spy, server.pid, f"{code.name}-{size}-{turn}")
                    try:
                        burst, made, rivals = await corral_burst(target, client, size, rival_key)
                    finally:
                        stop_py_spy(spy)
                    burst.system, burst.phase, burst.turn = code.name, phase, turn
                    print(burst.row(), burst.split, burst.busy, burst.window_line(), sep="\n", flush=True)
                    await remove(target.kill, made)
                    for key, sandbox_id in rivals:
                        await target.client.delete(f"/api/sandboxes/{sandbox_id}", headers={"X-API-Key": key})
                bursts.append(burst)
    finally:
        if target is not None:
            await target.close()
        try:
            await runc.close()
        finally:
            server.stop(keep_log=args.server_log)


def start_py_spy(out_dir: Path | None, pid: int | None, name: str) -> subprocess.Popen[bytes] | None:
    """With ``--py-spy DIR``: py-spy sampling the server's threads that hold the GIL (so,
    in a burst, mostly the event loop's) into ``DIR/<name>.txt``, one collapsed stack a
    line with its count (``--format raw``), until ``stop_py_spy``."""
    if out_dir is None or pid is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    argv = [binary, "record", "--gil", "--nonblocking", "--rate", "250", "--format", "raw"]
    spy = subprocess.Popen([*argv, "-o", str(out_dir / f"{name}.txt"), "--pid", str(pid)])
    time.sleep(0.5)  # attached before the burst starts
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # it writes its file and ends
        spy.wait(60)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    p.add_argument("--settle", type=float, default=3.0, help="seconds to wait before each burst")
    p.add_argument(
        "--quiet-busy",
        type=float,
        default=0.05,
        help="then wait until the machine is under this share busy (0.05)",
    )
    p.add_argument("--quiet-timeout", type=float, default=60.0, help="... at most this long (60 s)")
    p.add_argument(
        "--client",
        choices=["lean", "httpx"],
        default="lean",
        help="corral's burst client: a lean HTTP/1.1 client (http1.py; default) or httpx, "
        "whose own CPU (~6 ms a request) the burst's machine pays too",
    )
    p.add_argument("--max-seconds", type=float, default=1200.0)
    p.add_argument(
        "--py-spy",
        type=Path,
        help="record the server during each of its bursts with py-spy into this dir (collapsed stacks)",
    )
    p.add_argument(
        "--baseline", help="also run the same against this revision's server, one phase after the other"
    )
    p.add_argument("--baseline-first", action="store_true", help="the baseline's phase first (default: last)")
    entry.add_server_options(p)
    return p.parse_args()


def main() -> int:
    return entry.run(main_async, parse_args())


if __name__ == "__main__":
    sys.exit(main())
