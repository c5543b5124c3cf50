#!/usr/bin/env python3
"""Agents (issue 14, item 6): how long until an agent run has its desktop, and until an
agent session says its first word. ``--part runs`` or ``--part sessions`` measures one;
a new part is a coroutine returning its table rows, added to ``PARTS``.

Run as root from the repository root:

    .venv/bin/python bench/bench_agents.py --templates /var/tmp/corral-e2e/templates
    .venv/bin/python bench/bench_agents.py           # builds gui once, into the benchmarks' cache
    .venv/bin/python bench/bench_agents.py --part sessions --agent-templates /var/tmp/corral-agents/templates

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

each desktop deleted after. Then, on a server of its own with a network (agent sessions
reach the model through the binding forwarder on its bridge) whose templates are
``--agent-templates`` (``agent`` built there; default: the tests' data dir if it has it,
else the benchmarks' cache), ``--iterations`` times, in a new ``agent`` sandbox:

* ``agent session created -> first event``: ``POST /api/sandboxes/{id}/agent
  {prompt}`` then the exec-session WebSocket of the session (as both SDKs do) until
  the first JSON event line (``ready``): from the POST to that line (target: p50 <= 3 s);
* ``-> first answer``: from the same POST to the session's first turn's end
  (``turn_complete``, the fake model answering at once).

The load average is printed at the end.
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
import websockets
from corral_target import DEFAULT_CACHE, CorralServer, Network, ensure_template_cache, template_roots
from stats import Summary, fmt_ms, render_table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support's fake model
from tests.support.fake_anthropic import FakeMessagesApi

TARGET_READY_P50 = 2.0
TARGET_FIRST_EVENT_P50 = 3.0
SESSION_TIMEOUT_S = 120  # a session that says nothing this long fails the benchmark
AGENT_NETWORK = Network("cagent0", "10.235.0.0/16", 235)  # its own, apart from any other corral here
TESTS_AGENT_TEMPLATES = Path("/var/tmp/corral-agents/templates")  # tests/agents' data dir
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


async def session_first_event(
    api: httpx.AsyncClient, server: CorralServer, sandbox: str
) -> tuple[float, float, float]:
    """An agent session started in ``sandbox``: seconds from its POST to the POST's
    answer, to its first event line on the exec-session WebSocket, and to its first
    turn's end."""
    started = time.perf_counter()
    created = await api.post(f"/sandboxes/{sandbox}/agent", json={"prompt": "Say hello"})
    created.raise_for_status()
    posted = time.perf_counter() - started
    session = created.json()["sessionID"]
    url = f"{server.url.replace('http', 'ws', 1)}/api/sandboxes/{sandbox}/exec/{session}?api_key={server.api_key}"
    first: float | None = None
    buffered = b""
    async with websockets.connect(url) as ws, asyncio.timeout(SESSION_TIMEOUT_S):
        async for frame in ws:
            if not isinstance(frame, bytes) or frame[:1] != b"\x01":
                if isinstance(frame, bytes) and frame[:1] == b"\x03":
                    raise RuntimeError(f"agent session {session} ended early")
                continue
            buffered += frame[1:]
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                event = json.loads(line)
                first = first if first is not None else time.perf_counter() - started
                if event["type"] == "error":
                    raise RuntimeError(f"agent session {session}: {event}")
                if event["type"] == "turn_complete":
                    answered = time.perf_counter() - started
                    await api.post(f"/sandboxes/{sandbox}/agent/{session}/kill")
                    assert first is not None
                    return posted, first, answered
    raise RuntimeError(f"agent session {session}: the socket closed before the turn ended")


async def sessions_part(args: argparse.Namespace) -> list[list[str]]:
    templates = args.agent_templates
    if templates is None:
        has = template_roots(TESTS_AGENT_TEMPLATES, "agent")
        templates = TESTS_AGENT_TEMPLATES if has else ensure_template_cache(DEFAULT_CACHE, "agent")
    model = FakeMessagesApi(key=MODEL_KEY, default="Hello.").start()
    server = CorralServer(templates, workdir=args.workdir, network=AGENT_NETWORK)
    server.extra_env.update(
        {
            "CORRAL_ANTHROPIC_API_KEY": MODEL_KEY,
            "CORRAL_ANTHROPIC_BASE_URL": model.url,
            "CORRAL_STANDBY_SANDBOXES": str(args.standby),
        }
    )
    await server.start()
    api = httpx.AsyncClient(base_url=f"{server.url}/api", headers={"X-API-Key": server.api_key}, timeout=60)
    posted: list[float] = []
    first: list[float] = []
    answered: list[float] = []
    try:
        for _ in range(args.iterations):
            created = await api.post("/sandboxes", json={"templateID": "agent", "timeout": 600})
            created.raise_for_status()
            sandbox = created.json()["sandboxID"]
            post, event, answer = await session_first_event(api, server, sandbox)
            posted.append(post)
            first.append(event)
            answered.append(answer)
            await api.delete(f"/sandboxes/{sandbox}")
    finally:
        await api.aclose()
        server.stop()
        model.stop()
    p50 = Summary.of(first).p50
    verdict = "met" if p50 <= TARGET_FIRST_EVENT_P50 else "missed"
    print(
        f"agent session created -> first event p50 {fmt_ms(p50)} ms (target {fmt_ms(TARGET_FIRST_EVENT_P50)} ms): {verdict}"
    )
    return _rows(
        ("agent session POST -> its answer", posted),
        ("agent session created -> first event", first),
        ("agent session created -> first answer", answered),
    )


def _rows(*series: tuple[str, list[float]]) -> list[list[str]]:
    return [
        [name, *(fmt_ms(v) for v in (s.p50, s.p90, s.maximum)), str(s.count)]
        for name, s in ((name, Summary.of(values)) for name, values in series)
    ]


async def run(args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    for part in PARTS if args.part == "all" else (args.part,):
        rows += await PARTS[part](args)
    print(render_table(["", "p50 ms", "p90 ms", "max ms", "n"], rows, markdown=args.markdown))
    load = os.getloadavg()
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


async def runs_part(args: argparse.Namespace) -> list[list[str]]:
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
    p50 = Summary.of(ready).p50
    verdict = "met" if p50 <= TARGET_READY_P50 else "missed"
    print(f"run created -> ready p50 {fmt_ms(p50)} ms (target {fmt_ms(TARGET_READY_P50)} ms): {verdict}")
    return _rows(("run created -> desktop ready", ready), ("second run -> restored", restored))


PARTS = {"runs": runs_part, "sessions": sessions_part}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10, help="threads, two runs each; agent sessions (10)")
    p.add_argument("--standby", type=int, default=0, help="CORRAL_STANDBY_SANDBOXES of the server (0)")
    p.add_argument("--part", choices=("all", "runs", "sessions"), default="all", help="what to measure (all)")
    p.add_argument("--templates", type=Path, help="a templates dir with gui built")
    p.add_argument("--agent-templates", type=Path, help="a templates dir with agent built (sessions)")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where the data dir goes")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("run as root (runc)", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
