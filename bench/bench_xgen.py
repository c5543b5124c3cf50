#!/usr/bin/env python3
"""xgen WebSocket benchmark (issue 12, item 7): round trips over the xgen surface's
multiplexed WebSocket against the same work through the OpenComputer surface's HTTP
routes, on one sandbox of one server, in one run.

Run as root from the repository root:

    .venv/bin/python bench/bench_xgen.py
    .venv/bin/python bench/bench_xgen.py --iterations 200 --json out.json

It starts its own ``corral serve`` (runc, a throwaway data dir whose templates are
linked from ``--templates``, default ``/var/tmp/corral-xgen/templates``, which
``corral template build base --data-dir /var/tmp/corral-xgen`` fills; a network of
its own), creates one ``base`` sandbox through ``POST /api/v1/sandboxes`` and
measures, taking turns:

* ``exec true``: over the WebSocket (already connected, with the repository's client
  ``tests/support/xgen_client.py``), ExecStart of ``true`` to its ExecExit (the
  session started as uid 1000, attached, its exit); through OpenComputer, ``POST
  /api/sandboxes/{id}/exec/run {"cmd": "true"}`` on a kept-alive connection;
* ``1 MB write+read``: FsWrite of 1 MiB (to its Ack) then FsRead of it (to the bytes);
  through OpenComputer ``PUT`` then ``GET /api/sandboxes/{id}/files?path=...``.

p50 and p95 per operation, after a warm-up. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from corral_target import CorralServer, Network, require_template
from stats import emit, latency_summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.xgen_client import XgenClient, XgenSocket

MIB = os.urandom(1 << 20)

NETWORK = Network("corralbx0", "10.217.0.0/16", 217)  # its own, removed at the end


async def timed(op: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await op()
    return time.perf_counter() - started


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    templates = Path(args.templates)
    require_template(templates)
    server = CorralServer(templates, network=NETWORK)
    server.extra_env.update(
        CORRAL_STANDBY_SANDBOXES="0",
        CORRAL_RATE_LIMIT_XGEN="0",
        CORRAL_RATE_LIMIT_API="0",
    )
    samples: dict[str, list[float]] = {}
    async with (
        server.running(),
        XgenClient(server.url, server.api_key) as xgen,
        httpx.AsyncClient(
            base_url=f"{server.url}/api", headers={"X-API-Key": server.api_key}, timeout=60
        ) as oc,
    ):
        sandbox_id = (await xgen.create("base"))["id"]
        async with xgen.connect(sandbox_id) as ws:

            async def ws_exec() -> None:
                process = await ws.exec("true")
                assert await process.wait() == 0

            async def ws_files() -> None:
                await ws.write("bench.bin", MIB)
                assert len(await ws.read("bench.bin")) == len(MIB)

            async def oc_exec() -> None:
                answer = await oc.post(f"/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"})
                answer.raise_for_status()
                assert answer.json()["exitCode"] == 0

            async def oc_files() -> None:
                path = {"path": "/root/bench.bin"}
                (await oc.put(f"/sandboxes/{sandbox_id}/files", params=path, content=MIB)).raise_for_status()
                read = await oc.get(f"/sandboxes/{sandbox_id}/files", params=path)
                read.raise_for_status()
                assert len(read.content) == len(MIB)

            ops = {
                "exec true: xgen WebSocket": ws_exec,
                "exec true: OpenComputer HTTP": oc_exec,
                "1 MB write+read: xgen WebSocket": ws_files,
                "1 MB write+read: OpenComputer HTTP": oc_files,
            }
            await drain(ws)
            for op in ops.values():  # warm-up
                for _ in range(5):
                    await op()
            samples = {name: [] for name in ops}
            for _ in range(args.iterations):
                for name, op in ops.items():
                    samples[name].append(await timed(op))
        await xgen.delete(sandbox_id)
    return {
        "command": " ".join(["bench/bench_xgen.py", *sys.argv[1:]]),
        "load": os.getloadavg(),
        "results": {name: latency_summary(values, digits=2) for name, values in samples.items()},
    }


async def drain(ws: XgenSocket) -> None:
    """The announcements of connecting (ports) are not part of any round trip."""
    await ws.ping()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--templates", default="/var/tmp/corral-xgen/templates")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (runc)")
    emit(asyncio.run(main_async(args)), args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
