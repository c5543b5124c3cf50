#!/usr/bin/env python3
"""Agents (issue 14, item 6): how long until an agent run has its desktop.

Run as root from the repository root:

    .venv/bin/python bench/bench_agents.py --templates /var/tmp/corral-e2e/templates
    .venv/bin/python bench/bench_agents.py           # builds gui once, into the benchmarks' cache

It starts its own ``corral serve`` (runc) on a throwaway data dir whose templates are
``--templates`` (``gui`` built there), its model the fake Messages API of the tests
(tests/support/fake_anthropic.py, on loopback: it ends its turn at once), then
``--iterations`` times:

* ``run created -> desktop ready``: a new thread (``POST /api/sessions``), a run
  (``POST /api/sessions/{threadId}/runs``), then the run's progress stream
  (``GET .../runs/{runId}/stream``) until its ``desktop`` event says ``ready``: the
  time from the run's POST to that event (target: p50 <= 2 s);
* ``second run -> restored``: once the first run ended, a second run on the thread,
  until ``restored`` (its desktop reused): the same on a thread whose desktop is up;

each desktop deleted after. The load average is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

import httpx
from corral_target import DEFAULT_CACHE, CorralServer, ensure_template_cache
from stats import Summary, fmt_ms, render_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's fake model
from tests.support.fake_anthropic import FakeMessagesApi

TARGET_READY_P50 = 2.0
MODEL_KEY = "sk-ant-bench-agents"


async def follow(http: httpx.AsyncClient, thread: str, run: str, started: float, wanted: str) -> float:
    """Reads the run's SSE stream to its end; seconds from ``started`` to the desktop
    event saying ``wanted`` (RuntimeError if none did, or the run failed)."""
    seen: float | None = None
    async with http.stream("GET", f"/api/sessions/{thread}/runs/{run}/stream") as stream:
        kind = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                if kind == "desktop" and data["sandboxStatus"] == wanted and seen is None:
                    seen = time.perf_counter() - started
                if kind == "done":
                    if data["isErrored"]:
                        raise RuntimeError(f"run {run} failed: {data['error']}")
                    break
    if seen is None:
        raise RuntimeError(f"run {run} was never {wanted}")
    return seen


async def run_to_ready(http: httpx.AsyncClient) -> tuple[float, float, str]:
    """One thread: seconds to ``ready`` of its first run, to ``restored`` of its second,
    and its desktop's sandbox id."""
    thread = (await http.post("/api/sessions", json={"prompt": "look at the desktop"})).json()["threadId"]
    started = time.perf_counter()
    run = (await http.post(f"/api/sessions/{thread}/runs", json={"message": "go"})).json()["runId"]
    ready = await follow(http, thread, run, started, "ready")
    started = time.perf_counter()
    again = (await http.post(f"/api/sessions/{thread}/runs", json={"message": "again"})).json()["runId"]
    restored = await follow(http, thread, again, started, "restored")
    sandbox = (await http.get(f"/api/sessions/{thread}")).json()["thread"]["metadata"]["sandboxId"]
    return ready, restored, str(sandbox)


async def run(args: argparse.Namespace) -> int:
    templates = args.templates or ensure_template_cache(DEFAULT_CACHE, "gui")
    model = FakeMessagesApi(key=MODEL_KEY, default="Nothing to do.").start()
    server = CorralServer(templates, workdir=args.workdir)
    server.extra_env.update(
        {
            "CORRAL_ANTHROPIC_API_KEY": MODEL_KEY,
            "CORRAL_ANTHROPIC_BASE_URL": model.url,
            "CORRAL_NETWORK_ENABLED": "false",
            "CORRAL_STANDBY_SANDBOXES": str(args.standby),
            "CORRAL_RATE_LIMIT_RUNS": "0",  # it reads every run's stream: more than 60 requests a minute
        }
    )
    await server.start()
    http = httpx.AsyncClient(
        base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=60
    )
    api = httpx.AsyncClient(base_url=f"{server.url}/api", headers={"X-API-Key": server.api_key}, timeout=60)
    ready: list[float] = []
    restored: list[float] = []
    try:
        for _ in range(args.iterations):
            first, second, sandbox = await run_to_ready(http)
            ready.append(first)
            restored.append(second)
            await api.delete(f"/sandboxes/{sandbox}")
    finally:
        await http.aclose()
        await api.aclose()
        server.stop()
        model.stop()
    rows = [
        [name, *(fmt_ms(v) for v in (s.p50, s.p90, s.maximum)), str(s.count)]
        for name, s in (
            ("run created -> desktop ready", Summary.of(ready)),
            ("second run -> restored", Summary.of(restored)),
        )
    ]
    print(render_table(["", "p50 ms", "p90 ms", "max ms", "n"], rows, markdown=args.markdown))
    p50 = Summary.of(ready).p50
    verdict = "met" if p50 <= TARGET_READY_P50 else "missed"
    print(f"\nrun created -> ready p50 {fmt_ms(p50)} ms (target {fmt_ms(TARGET_READY_P50)} ms): {verdict}")
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10, help="threads, two runs each (10)")
    p.add_argument("--standby", type=int, default=0, help="CORRAL_STANDBY_SANDBOXES of the server (0)")
    p.add_argument("--templates", type=Path, help="a templates dir with gui built")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where the data dir goes")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root (runc)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
