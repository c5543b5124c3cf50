#!/usr/bin/env python3
"""Code-session benchmark (issue 11): a ``print(1)`` session from ``POST /sessions`` to
its ``end`` frame, against ``podman run --rm`` of the same root and a bare ``python3 -c``
on the host (the floor), in one run.

Run as root from the repository root:

    .venv/bin/python bench/bench_sessions.py
    .venv/bin/python bench/bench_sessions.py --iterations 50 --concurrency 20 --json out.json
    .venv/bin/python bench/bench_sessions.py --standby 0   # no sandbox standing by

It starts its own ``corral serve`` (runc, a throwaway data dir whose templates are
linked from ``--templates``, default ``/var/tmp/corral-enclave/templates``, which
``corral template build base --data-dir /var/tmp/corral-enclave`` fills; a network of
its own). Each system runs ``print(1)`` with python3:

* ``corral``: ``POST /sessions {"code": "print(1)"}`` (deny_all egress, default
  limits), then ``GET /sessions/:id/stream`` read to its ``end`` frame: the sandbox
  made, the program run, its result collected, the sandbox torn down;
* ``podman``: ``podman run --rm --network none <ulimits> <the same root, imported> python3 -c 'print(1)'``;
* ``host``: ``python3 -c 'print(1)'`` on the host, no isolation (the floor);
* ``root``: ``chroot <the same root> python3 -c 'print(1)'``: the sandbox's own python
  (its root's site-packages, not the host's), no isolation: the floor for that python.

Sequential (``--iterations``, the systems taking turns) and ``--concurrency`` at once
(``--rounds`` times): p50 and p95 of the time per session. Everything it made is
removed at the end (the server, its data dir, the imported image).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from corral_target import CorralServer, Network, require_template
from proc import run
from reference import PODMAN_ULIMITS, Podman
from stats import emit, in_turns, latency_summary

CODE = "print(1)"

NETWORK = Network("corralbs0", "10.211.0.0/16", 211)  # its own, removed at the end


async def corral_session(client: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    created = await client.post("/sessions", json={"code": CODE})
    created.raise_for_status()
    sid = created.json()["id"]
    async with client.stream("GET", f"/sessions/{sid}/stream") as answer:
        async for line in answer.aiter_lines():
            if line.startswith('data: {"kind":"end"'):
                if '"phase":"succeeded"' not in line:
                    raise RuntimeError(f"session {sid} ended {line}")
                break
    return time.perf_counter() - started


async def podman_run(image: str) -> float:
    started = time.perf_counter()
    argv = ["podman", "run", "--rm", "--network", "none", *PODMAN_ULIMITS, image, "python3", "-c", CODE]
    done = await run(argv, timeout=120)
    done.check()
    return time.perf_counter() - started


async def host_python(root: Path | None = None) -> float:
    started = time.perf_counter()
    chroot = ["chroot", str(root)] if root is not None else []
    (await run([*chroot, "python3", "-c", CODE], timeout=60)).check()
    return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    templates = Path(args.templates)
    roots = require_template(templates)
    server = CorralServer(templates, network=NETWORK)
    server.extra_env.update(
        CORRAL_STANDBY_SANDBOXES=str(args.standby),
        CORRAL_MAX_CONCURRENT_SESSIONS=str(max(args.concurrency, 1)),
        CORRAL_MAX_CONCURRENT_SESSIONS_PER_ORG=str(max(args.concurrency, 1)),
    )
    podman = Podman(roots[0], f"corral-bench-sessions-{secrets.token_hex(4)}")
    results: dict[str, dict[str, list[float]]] = {
        name: {"sequential": [], "concurrent": []} for name in ("corral", "podman", "host", "root")
    }
    async with server.running():
        try:
            await podman.setup()
            headers = {"Authorization": f"Bearer {server.api_key}"}
            limits = httpx.Limits(max_connections=args.concurrency * 2 + 4)
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, timeout=120, limits=limits
            ) as client:
                systems: dict[str, Callable[[], Awaitable[float]]] = {
                    "corral": lambda: corral_session(client),
                    "podman": lambda: podman_run(podman.image),
                    "host": host_python,
                    "root": lambda: host_python(roots[0]),
                }
                for name, samples in (await in_turns(systems, args.iterations)).items():
                    results[name]["sequential"] = samples
                for _ in range(args.rounds):
                    for name, one in systems.items():
                        batch = await asyncio.gather(*(one() for _ in range(args.concurrency)))
                        results[name]["concurrent"].extend(batch)
        finally:
            await podman.close()
            await run(["podman", "rmi", "-f", podman.image], timeout=120)
    return {
        "command": " ".join(["bench/bench_sessions.py", *sys.argv[1:]]),
        "load": os.getloadavg(),
        "results": {
            name: {phase: latency_summary(samples) for phase, samples in phases.items()}
            for name, phases in results.items()
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--templates", default="/var/tmp/corral-enclave/templates")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--standby", type=int, default=2, help="sandboxes standing by per template (runc's default: 2)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (runc, podman)")
    emit(asyncio.run(main_async(args)), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
