#!/usr/bin/env python3
"""The desktop of a ``gui`` sandbox: how long until it is ready, and what it costs idle.

Run as root from the repository root:

    .venv/bin/python bench/bench_desktop.py                       # builds gui once, into the cache
    .venv/bin/python bench/bench_desktop.py --templates /var/tmp/corral-e2e/templates

It starts its own ``corral serve`` (runc) on a throwaway data dir whose templates are
``--templates`` (default: the benchmarks' cache, ``base`` and ``gui`` built there once),
then, in turns so outside load falls on both alike:

* ``gui``: ``--iterations`` times, create (``POST /api/sandboxes {templateID: gui}``)
  then ``GET /preview/{id}/6080/`` through corral's gateway with the owner's key until
  noVNC's page answers 200; the time from the create's request to that answer is
  "desktop ready" (the create returns once the desktop is ready, so the GET answers at
  once), and the create alone is reported too;
* ``base``: the same create without a desktop (its create, for comparison);

then ``--memory-sandboxes`` idle gui sandboxes, ``--settle`` seconds after their
creates: the PSS of their processes (bench/memory.py), per sandbox and by process.
Every sandbox it made is deleted; the data dir is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
from corral_target import DEFAULT_CACHE, CorralServer, CorralTarget, Network, ensure_template_cache
from memory import mib
from stats import Summary, fmt_ms, render_table

TARGET_READY_P50 = 1.5
NETWORK = Network("cdesk0", "10.245.0.0/16", 245)  # its own, apart from any other corral here


async def desktop_ready(gui: CorralTarget, gateway: httpx.AsyncClient) -> tuple[str, float, float]:
    """A gui sandbox created: its id, seconds to the create's answer, to noVNC's page."""
    started = time.perf_counter()
    sandbox_id = await gui.create()
    created = time.perf_counter() - started
    while True:
        page = await gateway.get(f"/preview/{sandbox_id}/6080/")
        if page.status_code == 200 and "vnc.html" in page.text:
            return sandbox_id, created, time.perf_counter() - started
        if time.perf_counter() - started > 60:
            raise RuntimeError(f"noVNC of {sandbox_id} did not answer: {page.status_code} {page.text[:200]}")
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace) -> int:
    templates = args.templates or ensure_template_cache(DEFAULT_CACHE, "base")
    if args.templates is None:
        ensure_template_cache(DEFAULT_CACHE, "gui")
    server = CorralServer(templates, workdir=args.workdir, network=NETWORK)
    await server.start()
    gui = CorralTarget(server.url, server.api_key, server.runc_root, template="gui", server_pid=server.pid)
    base = CorralTarget(server.url, server.api_key, server.runc_root, template="base")
    gateway = httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.api_key}, timeout=60)
    ready: list[float] = []
    gui_creates: list[float] = []
    base_creates: list[float] = []
    try:
        for _ in range(args.iterations):
            sandbox_id, created, shown = await desktop_ready(gui, gateway)
            gui_creates.append(created)
            ready.append(shown)
            await gui.kill(sandbox_id)
            started = time.perf_counter()
            sandbox_id = await base.create()
            base_creates.append(time.perf_counter() - started)
            await base.kill(sandbox_id)
        idle = [(await desktop_ready(gui, gateway))[0] for _ in range(args.memory_sandboxes)]
        await asyncio.sleep(args.settle)  # idle means: nothing asked of them for a while
        memory = await gui.memory(idle)
    finally:
        await gateway.aclose()
        await gui.close()
        await base.close()
        server.stop()
    rows = [  # milliseconds
        [name, *(fmt_ms(v) for v in (s.p50, s.p90, s.maximum)), str(s.count)]
        for name, s in (
            ("gui: create to noVNC answering through the gateway", Summary.of(ready)),
            ("gui: the create's answer", Summary.of(gui_creates)),
            ("base: the create's answer", Summary.of(base_creates)),
        )
    ]
    print(render_table(["", "p50", "p90", "max", "n"], rows, markdown=args.markdown))
    p50 = Summary.of(ready).p50
    print(
        f"\ndesktop ready p50 {fmt_ms(p50)} ms (target {fmt_ms(TARGET_READY_P50)} ms): {'met' if p50 <= TARGET_READY_P50 else 'missed'}"
    )
    count = len(memory)
    by_name: dict[str, int] = {}
    for one in memory:
        for name, pss in one.by_name.items():
            by_name[name] = by_name.get(name, 0) + pss
    print(
        f"\nidle desktop sandbox ({count}, {args.settle:.0f} s after the create): "
        f"PSS {mib(sum(m.pss for m in memory) / count)} MiB, RSS {mib(sum(m.rss for m in memory) / count)} MiB, "
        f"cgroup {mib(sum(m.cgroup_usage for m in memory) / count)} MiB; PSS by process: "
        + ", ".join(
            f"{name} {mib(pss / count)}" for name, pss in sorted(by_name.items(), key=lambda kv: -kv[1])
        )
    )
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10, help="gui and base creates each (10)")
    p.add_argument("--memory-sandboxes", type=int, default=3, help="idle gui sandboxes for memory (3)")
    p.add_argument("--settle", type=float, default=5.0, help="seconds idle before memory is read (5)")
    p.add_argument("--templates", type=Path, help="a templates dir with base and gui built")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where the data dir goes")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root (runc)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
