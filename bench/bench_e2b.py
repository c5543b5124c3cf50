#!/usr/bin/env python3
"""E2B benchmark (issue 18, item 6): ``Sandbox.create()`` -> ``commands.run("true")`` ->
``kill()`` through the ``e2b`` SDK (the E2B surface: its control plane, and envd's
Connect ``process.Start`` stream), beside the same cycle through the OpenComputer Python
SDK (``Sandbox.create`` -> ``exec.run`` -> ``kill``), in one run against one server,
the two taking turns.

Run as root from the repository root:

    .venv/bin/python bench/bench_e2b.py
    .venv/bin/python bench/bench_e2b.py --iterations 40 --json out.json

It starts its own ``corral serve`` (runc, a throwaway data dir whose templates are
linked from ``--templates``, default ``/var/tmp/corral-e2b/templates``, which
``corral template build base --data-dir /var/tmp/corral-e2b`` fills; a network of its
own, removed at the end; no standby sandboxes unless ``--standby``, so both pay a full create). The command
is ``true``, run twice (``exec``: the first, ``exec2``: the second, not part of the
cycle). p50 and p95 of the cycle and of each step, per client; the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from corral_target import CorralServer, Network, require_template
from e2b import AsyncSandbox
from sdk_cycle import PARTS, opencomputer_cycle, sdk_cycle
from stats import emit, in_turns, parts_summary

NETWORK = Network("ce2b0", "10.251.0.0/16", 251)  # its own, apart from any other corral here


async def e2b_cycle(url: str, key: str) -> dict[str, float]:
    async def run_true(sandbox: AsyncSandbox) -> int:
        return int((await sandbox.commands.run("true")).exit_code)

    return await sdk_cycle(
        lambda: AsyncSandbox.create("base", api_key=key, api_url=url, sandbox_url=url),
        run_true,
        lambda sandbox: sandbox.kill(),
    )


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    templates = Path(args.templates)
    require_template(templates)
    server = CorralServer(templates, network=NETWORK)
    server.extra_env.update(CORRAL_STANDBY_SANDBOXES=str(args.standby))
    load_before = os.getloadavg()
    async with server.running():
        cycles = {
            "e2b-sdk": lambda: e2b_cycle(server.url, server.api_key),
            "opencomputer-sdk": lambda: opencomputer_cycle(server.url, server.api_key),
        }
        results = await in_turns(cycles, args.iterations)
    return {
        "command": " ".join(["bench/bench_e2b.py", *sys.argv[1:]]),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "iterations": args.iterations,
        "results": {name: parts_summary(samples, PARTS) for name, samples in results.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--templates", default="/var/tmp/corral-e2b/templates")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--standby", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(main_async(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
