#!/usr/bin/env python3
"""Copass compute benchmark (issue 13, item 6): create -> first exec -> stop of a session
through ``copass-core`` (the Copass surface), beside the same cycle through the
OpenComputer Python SDK (``Sandbox.create`` -> ``exec.run`` -> ``kill``), in one run
against one server, the two taking turns.

Run as root from the repository root:

    .venv/bin/python bench/bench_copass.py
    .venv/bin/python bench/bench_copass.py --iterations 40 --json out.json

It starts its own ``corral serve`` (runc, a throwaway data dir whose templates are
linked from ``--templates``, default ``/var/tmp/corral-copass/templates``, which
``corral template build base --data-dir /var/tmp/corral-copass`` fills; a network of
its own; no standby sandboxes unless ``--standby``, so both pay a full create). The
command is ``true``, run twice (``exec``: the first, ``exec2``: the second, which is
not part of the cycle). p50 and p95 of the cycle and of each step, per client.
copass-core makes a new ``httpx.AsyncClient`` for each call (its design: no pooling;
each one builds an SSL context, tens to hundreds of ms on a loaded host), so a third
client, ``copass-routes``, sends the same requests on one pooled httpx client: that is
the surface's own cost, to compare with ``opencomputer-routes``, the same cycle on
OpenComputer's routes (``POST /api/sandboxes``, ``exec/run``, ``DELETE``) on the same
kind of client; the OpenComputer SDK keeps its connection too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import httpx
from copass_core import ApiKeyAuth, CopassClient
from corral_target import CorralServer, Network, require_template
from sdk_cycle import PARTS, opencomputer_cycle
from stats import emit, in_turns, parts_summary

NETWORK = Network("corralbcp0", "10.219.0.0/16", 219)  # its own, removed at the end


NS = "bench"


async def copass_cycle(compute: object) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    session = await compute.create_session(NS, template="base")  # type: ignore[attr-defined]
    times["create"] = time.perf_counter() - started
    step = time.perf_counter()
    ran = await compute.exec(NS, session.session_id, cmd=["true"])  # type: ignore[attr-defined]
    assert ran.exit_code == 0, ran
    times["exec"] = time.perf_counter() - step
    step = time.perf_counter()
    await compute.exec(NS, session.session_id, cmd=["true"])  # type: ignore[attr-defined]
    times["exec2"] = time.perf_counter() - step
    step = time.perf_counter()
    await compute.stop_session(NS, session.session_id)  # type: ignore[attr-defined]
    times["stop"] = time.perf_counter() - step
    times["cycle"] = time.perf_counter() - started - times["exec2"]
    return times


async def routes_cycle(http: httpx.AsyncClient) -> dict[str, float]:
    """The requests copass-core sends, on one pooled connection: the surface's own cost."""
    base = f"/api/v1/storage/sandboxes/{NS}/compute/sessions"
    times: dict[str, float] = {}
    started = time.perf_counter()
    created = await http.post(base, json={"template": "base"})
    created.raise_for_status()
    session_id = created.json()["session_id"]
    times["create"] = time.perf_counter() - started
    step = time.perf_counter()
    ran = await http.post(f"{base}/{session_id}/exec", json={"cmd": ["true"]})
    assert ran.status_code == 200 and ran.json()["exit_code"] == 0, ran.text
    times["exec"] = time.perf_counter() - step
    step = time.perf_counter()
    (await http.post(f"{base}/{session_id}/exec", json={"cmd": ["true"]})).raise_for_status()
    times["exec2"] = time.perf_counter() - step
    step = time.perf_counter()
    (await http.delete(f"{base}/{session_id}")).raise_for_status()
    times["stop"] = time.perf_counter() - step
    times["cycle"] = time.perf_counter() - started - times["exec2"]
    return times


async def opencomputer_routes_cycle(http: httpx.AsyncClient) -> dict[str, float]:
    """The same on OpenComputer's own routes, on one pooled connection."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    created = await http.post("/api/sandboxes", json={"templateID": "base"})
    created.raise_for_status()
    sandbox_id = created.json()["sandboxID"]
    times["create"] = time.perf_counter() - started
    for part in ("exec", "exec2"):
        step = time.perf_counter()
        ran = await http.post(f"/api/sandboxes/{sandbox_id}/exec/run", json={"cmd": "true"})
        assert ran.status_code == 200 and ran.json()["exitCode"] == 0, ran.text
        times[part] = time.perf_counter() - step
    step = time.perf_counter()
    (await http.delete(f"/api/sandboxes/{sandbox_id}")).raise_for_status()
    times["stop"] = time.perf_counter() - step
    times["cycle"] = time.perf_counter() - started - times["exec2"]
    return times


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    templates = Path(args.templates)
    require_template(templates)
    server = CorralServer(templates, network=NETWORK)
    server.extra_env.update(
        CORRAL_STANDBY_SANDBOXES=str(args.standby),
    )
    headers = {"Authorization": f"Bearer {server.api_key}"}
    async with (
        server.running(),
        httpx.AsyncClient(base_url=server.url, headers=headers, timeout=120) as http,
    ):
        compute = CopassClient(auth=ApiKeyAuth(key=server.api_key), api_url=server.url).compute
        cycles = {
            "copass-core": lambda: copass_cycle(compute),
            "copass-routes": lambda: routes_cycle(http),
            "opencomputer-sdk": lambda: opencomputer_cycle(server.url, server.api_key),
            "opencomputer-routes": lambda: opencomputer_routes_cycle(http),
        }
        results = await in_turns(cycles, args.iterations)
    return {
        "command": " ".join(["bench/bench_copass.py", *sys.argv[1:]]),
        "load": os.getloadavg(),
        "iterations": args.iterations,
        "results": {name: parts_summary(samples, PARTS) for name, samples in results.items()},
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--templates", default="/var/tmp/corral-copass/templates")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--standby", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    emit(asyncio.run(main_async(args)), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
