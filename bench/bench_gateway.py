#!/usr/bin/env python3
"""Gateway benchmark: servers in a sandbox reached directly and through corral's
gateway, in one run.

Run from the repository root:

    .venv/bin/python bench/bench_gateway.py
    .venv/bin/python bench/bench_gateway.py --duration 10 --connections 32 --json out.json
    .venv/bin/python bench/bench_gateway.py --baseline 828f089   # and that commit's gateway

It starts its own ``corral serve`` equivalent (the process runtime, on a free loopback
port, a temporary data dir), creates a sandbox and runs two servers in it:

* ``keepalive``: ``tests/unit/gateway/sandbox_app.py`` (asyncio, HTTP/1.1 keep-alive,
  ``GET /hello`` answers 22 bytes; a WebSocket echo on ``/ws``);
* ``http.server``: ``python3 -m http.server`` (HTTP/1.0, one connection per request),
  the server people most often start in a sandbox;
* ``node``: Node's ``http`` module (keep-alive), what JavaScript dev servers run on
  (when ``node`` is installed).

For each server, the same ``GET`` direct (the sandbox's address: 127.0.0.1 on the
process runtime), through the gateway by path (``/preview/{id}/{port}/``) and by host
(``{port}-{id}.localhost``), through nginx (``bench/nginx.py``: the reference, a C
proxy in the gateway's place; skipped with ``--no-nginx``), through a bare byte relay
on uvloop (``relay``) and through a bare HTTP proxy (``pyhttp``: httptools both ways, heads
written again, nothing else), both ``bench/relay.py``, what a proxy in Python costs at
least, and through the gateway by path on Granian (``granian``: corral's plain ASGI app,
no front and no fast path, served by Granian's Rust HTTP/1 server with the front's bounds; the
contender to the front of issue 10; process runtime only, when ``granian`` is installed:
the ``bench`` extra): requests/s and latency p50/p90/p99 with ``--connections``
for ``--duration`` seconds, and with one connection (the latency the gateway adds).
Then a WebSocket echo round trip, ``--ws-messages`` in sequence, direct and through
the gateway, ``--rounds`` times in turns like the HTTP routes (p50 and the rest over all
rounds' round trips; the serving corral's CPU per message); ``--ws-only`` measures only
that. Load comes from ``wrk`` when installed, else from an asyncio client.

With ``--baseline REV``, REV's corral is started too (``bench/baseline.py``: a worktree
of REV, removed at the end; its own data dir, and on runc its own network), with a
sandbox of its own running the same servers, and its routes (``direct@<rev>``: its
servers directly, as ``direct`` is this tree's, ``path@<rev>``, ``host@<rev>``, and the
WebSocket echo) are measured in the same loop right after this tree's, the same duration
and connections; a last table gives this tree's routes against REV's (requests/s and p50,
as ratios; the serving corral's CPU per request). ``--census`` counts what each corral's
fast path took and declined (``fast_path_census.py``).

Only loopback addresses are contacted. Every phase is bounded by ``--duration``; at
the end the sandbox is killed and the server stopped (by its pid), the temp dir removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import fast_path_census
import httpx
import websockets
from baseline import Worktree
from corral_target import DEFAULT_CACHE, HEAD, Code, CorralServer, Network, template_root
from nginx import Nginx, binary
from relay import Relay
from stats import Summary, fmt_ms, fmt_ratio, render_table

if TYPE_CHECKING:
    from fastapi import FastAPI
    from granian.server.embed import Server

    from corral.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "unit" / "gateway" / "sandbox_app.py"
KEY = "ek_benchgateway_" + "b" * 32
WRK = shutil.which("wrk")
NODE = shutil.which("node")
# Node's own http module, keep-alive, the way dev servers (vite, next) answer.
NODE_SERVER = (
    "require('http').createServer((q, r) => {"
    " if (q.url === '/hello') { r.setHeader('content-type', 'text/plain');"
    " r.end('hello from the sandbox'); } else { r.statusCode = 404; r.end(); }"
    "}).listen(+process.argv[1], process.argv[2])"
)
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
# On runc, each server's own network, apart from any other corral on the machine.
NETWORK = Network("cgate0", "10.243.0.0/16", 243)
BASELINE_NETWORK = Network("cgbase0", "10.244.0.0/16", 244)


@dataclass
class Load:
    target: str  # server in the sandbox
    route: str  # direct | path | host | nginx
    connections: int
    requests_per_s: float
    p50: float
    p90: float
    p99: float
    errors: int
    cpu_us: float = 0.0  # the serving corral's CPU time per request (user + system); 0: not a corral


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by process ``pid`` and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(port: int, granian_port: int, data_dir: str, code: Path, census: Path | None = None) -> None:
    """``--serve``: corral on the process runtime, with the options ``corral serve`` uses;
    the same app also on Granian on ``granian_port`` (0: not), in the same process and
    event loop, so both serve the same core and gateway (a second process could not:
    the data dir is held by one). uvicorn runs the app's lifespan, Granian serves the app
    as a plain ASGI app without it (``asginl``). ``code``: the checkout whose ``corral``
    is imported (this tree's, or a baseline's worktree); exits when another is. ``census``:
    count the fast path's takes and declines (``fast_path_census``), written there at the end."""
    sys.path.insert(0, str(code))
    import uvicorn
    import uvloop

    import corral

    if not Path(corral.__file__).resolve().is_relative_to(code.resolve()):
        raise SystemExit(f"--serve imported corral from {corral.__file__}, not from {code}")
    if census is not None:
        fast_path_census.install()
        # uvicorn raises the SIGTERM it caught again once stopped, with the handler it
        # found in place: one that returns lets the counts below be written.
        signal.signal(signal.SIGTERM, lambda *_: None)
    from corral.api.app import create_app
    from corral.api.server import config
    from corral.runtime.process import ProcessRuntime
    from corral.runtime.static_templates import StaticTemplates
    from corral.settings import Settings

    settings = Settings(data_dir=Path(data_dir), api_key=KEY, runtime="process", port=port)
    app = create_app(
        settings, runtime=ProcessRuntime(Path(data_dir) / "sandboxes"), templates=StaticTemplates()
    )
    server = uvicorn.Server(config(settings, app))  # exactly what `corral serve` runs
    if not granian_port:
        server.run()
        if census is not None:
            fast_path_census.dump(census)
        return

    async def both() -> None:
        granian = granian_server(app, granian_port, settings)
        on_granian = asyncio.create_task(granian.serve())
        await server.serve()
        granian.stop()  # type: ignore[no-untyped-call]
        await on_granian

    uvloop.run(both())
    if census is not None:
        fast_path_census.dump(census)


def granian_server(app: FastAPI, port: int, settings: Settings) -> Server:
    """Granian (embedded: in this event loop) serving ``app`` as plain ASGI on ``port``,
    HTTP/1 with the front's bounds in place of its own defaults: a head must arrive within
    ``http_head_timeout_s`` (``--http1-header-read-timeout``, ms) and fit in
    ``http_max_header_bytes`` (``--http1-buffer-size``, the most hyper buffers before a
    head is complete); the header count is hyper's fixed 100, the setting's default
    (Granian has no option for it). One Rust runtime thread and asyncio tasks, Granian's
    defaults (its experimental Rust tasks break the app's futures when embedded)."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server.embed import Server

    return Server(
        app,
        address="127.0.0.1",
        port=port,
        interface=Interfaces.ASGINL,
        http=HTTPModes.http1,
        backlog=2048,  # uvicorn's
        http1_settings=HTTP1Settings(
            header_read_timeout=round(settings.http_head_timeout_s * 1000),
            max_buffer_size=settings.http_max_header_bytes,
        ),
        log_enabled=False,  # its log goes to stdout, where the report is
    )


# ---- load generators ------------------------------------------------------------------


async def wrk(
    url: str, headers: dict[str, str], connections: int, duration: float
) -> tuple[float, list[float], int]:
    assert WRK is not None
    argv = [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "--timeout", "5s"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    proc = await asyncio.create_subprocess_exec(*argv, url, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = (await asyncio.wait_for(proc.communicate(), duration + 30))[0].decode()
    except BaseException:  # cancelled (Ctrl-C) or too slow: no wrk outlives the run
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pcts = {
        int(p): float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    }
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad_status = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = sum(map(int, socket_errors.groups())) if socket_errors else 0
    errors += int(bad_status.group(1)) if bad_status else 0
    # wrk reports 50/75/90/99: give them as samples the summary reads back exactly
    return rate, [pcts.get(50, float("nan")), pcts.get(90, float("nan")), pcts.get(99, float("nan"))], errors


async def py_load(
    url: str, headers: dict[str, str], connections: int, duration: float
) -> tuple[float, list[float], int]:
    """``connections`` raw HTTP/1.1 clients for ``duration`` s (reconnecting when the
    server closes): requests/s, every latency, errors."""
    parts = httpx.URL(url)
    request = (
        f"GET {parts.raw_path.decode()} HTTP/1.1\r\nHost: {headers.get('Host', parts.netloc.decode())}\r\n"
    )
    request += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k != "Host") + "\r\n"
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        nonlocal errors
        reader = writer = None
        while time.perf_counter() < deadline:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(parts.host, parts.port)
                started = time.perf_counter()
                writer.write(request.encode())
                head = await reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)  # type: ignore[union-attr]
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 2") and not head.startswith(b"HTTP/1.0 2"):
                    errors += 1
                if head.startswith(b"HTTP/1.0") or re.search(rb"(?i)connection:\s*close", head):
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, AttributeError):
                errors += 1
                writer = None
        if writer is not None:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return len(latencies) / (time.perf_counter() - started), latencies, errors


async def measure(
    target: str, route: str, url: str, headers: dict[str, str], conns: int, secs: float, use_wrk: bool
) -> Load:
    rate, samples, errors = await (wrk if use_wrk else py_load)(url, headers, conns, secs)
    if use_wrk:
        p50, p90, p99 = samples
    else:
        s = Summary.of(samples)
        p50, p90, p99 = s.p50, s.p90, s.p99
    return Load(target, route, conns, rate, p50, p90, p99, errors)


async def measure_cpu(
    server: Gateway | None,
    target: str,
    route: str,
    url: str,
    headers: dict[str, str],
    conns: int,
    secs: float,
    use_wrk: bool,
) -> Load:
    """``measure``, and for a route through ``server`` (when the bench started its
    process) that process's CPU time per request: unlike requests/s and latency, it
    hardly moves with what else the machine runs."""
    pid = server.pid if server else 0
    before = cpu_seconds(pid) if pid else 0.0
    load = await measure(target, route, url, headers, conns, secs, use_wrk)
    if pid and load.requests_per_s:
        load.cpu_us = (cpu_seconds(pid) - before) / (load.requests_per_s * secs) * 1e6
    return load


async def ws_round_trips(url: str, headers: dict[str, str], count: int) -> Summary:
    return Summary.of(await ws_samples(url, headers, count))


async def ws_samples(url: str, headers: dict[str, str], count: int) -> list[float]:
    """``count`` echo round trips of 32 B on one WebSocket, after 50 to warm up."""
    samples: list[float] = []
    async with websockets.connect(url, additional_headers=headers, compression=None) as ws:
        for i in range(50):  # warm up
            await ws.send("warm-up")
            await ws.recv()
        payload = "x" * 32
        for _ in range(count):
            started = time.perf_counter()
            await ws.send(payload)
            await ws.recv()
            samples.append(time.perf_counter() - started)
    return samples


# ---- the run --------------------------------------------------------------------------


@dataclass
class Sandbox:
    """Where the servers run: the process runtime (the host, 127.0.0.1) or runc (the
    sandbox's own address on the bridge, its own python3 and /tmp)."""

    python: str
    bind: str
    tmp: str
    node: str | None


async def sandbox_address(api: httpx.AsyncClient, sid: str, python: str) -> str:
    """The sandbox's address as its own routing table has it (a UDP connect sends nothing)."""
    probe = "import socket; s = socket.socket(2, 2); s.connect(('192.0.2.1', 9)); print(s.getsockname()[0])"
    ran = await api.post(f"/sandboxes/{sid}/exec/run", json={"cmd": python, "args": ["-c", probe]})
    ran.raise_for_status()
    return str(ran.json()["stdout"]).strip()


async def start_servers(api: httpx.AsyncClient, base: str, sid: str, where: Sandbox) -> dict[str, int]:
    ports = {"keepalive": free_port(), "http.server": free_port()}
    if where.node:
        ports["node"] = free_port()
    script = f"{where.tmp}/sandbox_app.py"
    (
        await api.put(f"/sandboxes/{sid}/files", params={"path": script}, content=APP.read_bytes())
    ).raise_for_status()
    www = f"{where.tmp}/www"
    (
        await api.put(
            f"/sandboxes/{sid}/files", params={"path": f"{www}/hello"}, content=b"hello from the sandbox"
        )
    ).raise_for_status()
    commands = {
        "keepalive": [script, str(ports["keepalive"]), where.bind],
        "http.server": [
            "-m",
            "http.server",
            str(ports["http.server"]),
            "--bind",
            where.bind,
            "--directory",
            www,
        ],
    }
    if where.node:
        commands["node"] = ["-e", NODE_SERVER, str(ports["node"]), where.bind]
    for name, argv in commands.items():
        cmd = where.node if name == "node" else where.python
        (await api.post(f"/sandboxes/{sid}/exec", json={"cmd": cmd, "args": argv})).raise_for_status()
    for port in ports.values():
        deadline = time.monotonic() + 15
        while (await api.get(f"{base}/preview/{sid}/{port}/hello")).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server on port {port} did not start")
            await asyncio.sleep(0.1)
    return ports


@dataclass
class Gateway:
    """A corral serving for the run: ``name`` (``corral``, or ``corral@<rev>``), its URL,
    an owner's key, its app on Granian (or None); once ``placed``, the sandbox the
    servers run in, their address and ports."""

    name: str
    base: str
    key: str
    granian: str | None = None
    pid: int = 0  # its server process, when the bench started one (process runtime)
    sid: str = ""
    address: str = ""
    ports: dict[str, int] | None = None
    census: dict[str, int] | None = None  # with --census: its fast path's counts, once stopped

    @property
    def suffix(self) -> str:
        """What its routes' names end with: nothing for this tree's, ``@<rev>`` else."""
        return self.name.removeprefix("corral")

    @property
    def owner(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def api(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"{self.base}/api", headers=self.owner, timeout=30)

    async def place(self, args: argparse.Namespace, tmp: Path) -> None:
        """A sandbox with the servers running in it."""
        async with self.api() as api:
            self.sid = (await api.post("/sandboxes", json={})).json()["sandboxID"]
            if args.runtime == "runc":
                where = Sandbox("python3", "0.0.0.0", "/tmp", None)
                self.address = await sandbox_address(api, self.sid, where.python)
            else:
                (tmp / self.name).mkdir()
                where = Sandbox(sys.executable, "127.0.0.1", str(tmp / self.name), NODE)
                self.address = "127.0.0.1"
            self.ports = await start_servers(api, self.base, self.sid, where)

    async def remove(self) -> None:
        if self.sid:
            async with self.api() as api:
                try:
                    await api.delete(f"/sandboxes/{self.sid}")
                except httpx.HTTPError as exc:  # the server's stop removes what is left
                    print(f"  ! {self.name}: deleting {self.sid}: {exc}", file=sys.stderr)

    def routes(self, target: str) -> dict[str, tuple[str, dict[str, str]]]:
        """Its gateway's routes to server ``target``: by path, by host, on Granian."""
        assert self.ports is not None
        port, gw_port = self.ports[target], int(self.base.rsplit(":", 1)[1])
        routes = {
            f"path{self.suffix}": (f"{self.base}/preview/{self.sid}/{port}/hello", self.owner),
            f"host{self.suffix}": (
                f"{self.base}/hello",
                {**self.owner, "Host": f"{port}-{self.sid}.localhost:{gw_port}"},
            ),
        }
        if self.granian:  # right after the fast path's routes: the pair the decision compares
            routes[f"granian{self.suffix}"] = (f"{self.granian}/preview/{self.sid}/{port}/hello", self.owner)
        return routes

    def ws_url(self) -> str:
        """Its gateway's route to the keepalive server's WebSocket echo, by path."""
        assert self.ports is not None
        host = self.base.removeprefix("http://")
        return f"ws://{host}/preview/{self.sid}/{self.ports['keepalive']}/ws"


async def ws_rounds(
    args: argparse.Namespace, gateways: list[Gateway], address: str, port: int
) -> tuple[dict[str, Summary], dict[str, float]]:
    """The WebSocket echo, direct and through each gateway, ``--rounds`` times in turns
    (odd rounds in reverse order, as the HTTP routes; a baseline's own server directly as
    well, ``direct@<rev>``), ``--ws-messages`` each time: each
    route's round trips of all rounds together, and each gateway's CPU time a message
    (its process's, over its phases, divided by its round trips)."""
    routes: list[tuple[str, str, Gateway | None]] = [("direct", f"ws://{address}:{port}/ws", None)]
    for g in gateways:
        if g is not gateways[0] and g.ports is not None:  # a baseline's own server directly too
            routes.append((f"direct{g.suffix}", f"ws://{g.address}:{g.ports['keepalive']}/ws", None))
        routes.append((f"gateway{g.suffix}", g.ws_url(), g))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in routes}
    cpu: dict[str, float] = {name: 0.0 for name, _, _ in routes}
    for turn in range(args.rounds):
        for name, url, gateway in routes[:: -1 if turn % 2 else 1]:
            headers = gateway.owner if gateway is not None else {}
            pid = gateway.pid if gateway is not None else 0
            before = cpu_seconds(pid) if pid else 0.0
            phase = await ws_samples(url, headers, args.ws_messages)
            if pid:
                cpu[name] += cpu_seconds(pid) - before
            samples[name] += phase
            print(f"  ws round {turn + 1} {name}: p50 {fmt_ms(Summary.of(phase).p50)} ms", flush=True)
    per_message = {
        name: cpu[name] / len(samples[name]) * 1e6 for name, _, g in routes if g is not None and g.pid
    }
    return {name: Summary.of(xs) for name, xs in samples.items()}, per_message


async def run(args: argparse.Namespace, gateways: list[Gateway], tmp: Path) -> dict[str, object]:
    """Every route of every server, each gateway's right after this tree's: the servers
    in this tree's sandbox are the ones reached directly and through the references."""
    head = gateways[0]
    try:
        for gateway in gateways:
            await gateway.place(args, tmp)
        address, ports = head.address, head.ports
        assert ports is not None
        proxied = {free_port(): port for port in ports.values()}
        reference = (
            Nginx(args.nginx, tmp / "nginx", proxied, address) if args.nginx else contextlib.nullcontext()
        )
        by_upstream = {up: listen for listen, up in proxied.items()}
        relayed = {free_port(): port for port in ports.values()}
        relay_of = {up: listen for listen, up in relayed.items()}
        parsed = {free_port(): port for port in ports.values()}
        parsing_of = {up: listen for listen, up in parsed.items()}
        loads: list[Load] = []
        with reference, Relay(relayed, address), Relay(parsed, address, http=True):
            for target, port in [] if args.ws_only else ports.items():
                routes: dict[str, tuple[str, dict[str, str]]] = {
                    "direct": (f"http://{address}:{port}/hello", {})
                }
                for gateway in gateways:
                    if gateway is not head and gateway.ports is not None:
                        # a baseline's own servers directly too: each corral's routes then
                        # follow a direct phase of its own servers alike, in both orders
                        own = f"http://{gateway.address}:{gateway.ports[target]}/hello"
                        routes[f"direct{gateway.suffix}"] = (own, {})
                    routes.update(gateway.routes(target))
                if args.nginx:
                    routes["nginx"] = (f"http://127.0.0.1:{by_upstream[port]}/hello", {})
                routes["relay"] = (f"http://127.0.0.1:{relay_of[port]}/hello", {})
                routes["pyhttp"] = (f"http://127.0.0.1:{parsing_of[port]}/hello", {})
                serving = {route: g for g in gateways for route in g.routes(target)}
                for conns in (args.connections, 1):
                    rounds: list[list[Load]] = []
                    for turn in range(args.rounds):
                        # Odd rounds go in reverse, so no route always runs first.
                        order = list(routes.items())[:: -1 if turn % 2 else 1]
                        rounds.append(
                            [
                                await measure_cpu(
                                    serving.get(route),
                                    target,
                                    route,
                                    url,
                                    headers,
                                    conns,
                                    args.duration,
                                    args.wrk,
                                )
                                for route, (url, headers) in order
                            ]
                        )
                    loads.extend(median_loads(rounds))
        ws, ws_cpu = await ws_rounds(args, gateways, address, ports["keepalive"])
    finally:
        for gateway in gateways:
            await gateway.remove()
    return {"loads": loads, "ws": ws, "ws_cpu": ws_cpu}


def median_loads(rounds: list[list[Load]]) -> list[Load]:
    """One ``Load`` a route: the medians of its rounds' figures (errors summed), in
    the first round's order."""
    by: dict[str, list[Load]] = {}
    for round_ in rounds:
        for x in round_:
            by.setdefault(x.route, []).append(x)
    return [
        Load(
            xs[0].target,
            route,
            xs[0].connections,
            statistics.median(x.requests_per_s for x in xs),
            statistics.median(x.p50 for x in xs),
            statistics.median(x.p90 for x in xs),
            statistics.median(x.p99 for x in xs),
            sum(x.errors for x in xs),
            statistics.median(x.cpu_us for x in xs),
        )
        for route, xs in by.items()
    ]


def report(result: dict[str, object], markdown: bool, use_wrk: bool) -> str:
    loads: list[Load] = result["loads"]  # type: ignore[assignment]
    direct = {(x.target, x.connections): x for x in loads if x.route == "direct"}
    rows = []
    for x in loads:
        d = direct[(x.target, x.connections)]
        rows.append(
            [
                x.target,
                x.route,
                str(x.connections),
                f"{x.requests_per_s:,.0f}",
                fmt_ms(x.p50),
                fmt_ms(x.p90),
                fmt_ms(x.p99),
                f"{x.requests_per_s / d.requests_per_s:.0%}"
                if x.route != "direct" and d.requests_per_s
                else "",
                f"{(x.p50 - d.p50) * 1000:+.3f}" if x.route != "direct" else "",
                str(x.errors),
            ]
        )
    header = [
        "server",
        "route",
        "conns",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "of direct",
        "added p50 ms",
        "errors",
    ]
    out = [
        f"HTTP GET (load: {'wrk' if use_wrk else 'asyncio client'})",
        render_table(header, rows, markdown, left=2),
    ]
    ws: dict[str, Summary] = result["ws"]  # type: ignore[assignment]
    ws_cpu: dict[str, float] = result["ws_cpu"]  # type: ignore[assignment]
    ws_rows = [
        [
            k,
            str(s.count),
            fmt_ms(s.p50),
            fmt_ms(s.p90),
            fmt_ms(s.p99),
            f"{ws_cpu[k]:.0f}" if k in ws_cpu else "",
        ]
        for k, s in ws.items()
    ]
    added = (ws["gateway"].p50 - ws["direct"].p50) * 1000
    out += ["", f"WebSocket echo round trip (32 B text; added p50 {added:+.3f} ms)"]
    ws_header = ["route", "messages", "p50 ms", "p90 ms", "p99 ms", "CPU µs/msg"]
    out.append(render_table(ws_header, ws_rows, markdown))
    baselines = sorted({k.partition("@")[2] for k in ws if "@" in k})
    for rev in baselines:
        out += ["", against(loads, ws, ws_cpu, rev, markdown)]
    return "\n".join(out)


def against(
    loads: list[Load], ws: dict[str, Summary], ws_cpu: dict[str, float], rev: str, markdown: bool
) -> str:
    """This tree's gateway routes beside the same routes of ``corral@rev``: requests/s
    and p50, and their ratios (req/s above 1 and p50 below 1: this tree is faster)."""
    by = {(x.target, x.route, x.connections): x for x in loads}
    rows = []
    for x in loads:
        old = by.get((x.target, f"{x.route}@{rev}", x.connections))
        if old is None:
            continue
        rows.append(
            [
                x.target,
                x.route,
                str(x.connections),
                f"{x.requests_per_s:,.0f}",
                f"{old.requests_per_s:,.0f}",
                f"{x.requests_per_s / old.requests_per_s:.2f}x" if old.requests_per_s else "-",
                fmt_ms(x.p50),
                fmt_ms(old.p50),
                fmt_ratio(x.p50, old.p50),
                f"{x.cpu_us:.0f}" if x.cpu_us else "",
                f"{old.cpu_us:.0f}" if old.cpu_us else "",
                fmt_ratio(x.cpu_us, old.cpu_us) if x.cpu_us and old.cpu_us else "",
            ]
        )
    old_direct = ws.get(f"direct@{rev}")
    if old_direct is not None:
        rows.append(
            [
                "keepalive",
                "WebSocket direct",
                "1",
                "",
                "",
                "",
                fmt_ms(ws["direct"].p50),
                fmt_ms(old_direct.p50),
            ]
            + [fmt_ratio(ws["direct"].p50, old_direct.p50), "", "", ""]
        )
    old_ws = ws.get(f"gateway@{rev}")
    if old_ws is not None:
        new_ws = ws["gateway"]
        cpu = [ws_cpu.get("gateway", 0.0), ws_cpu.get(f"gateway@{rev}", 0.0)]
        rows.append(
            ["keepalive", "WebSocket echo", "1", "", "", "", fmt_ms(new_ws.p50), fmt_ms(old_ws.p50)]
            + [fmt_ratio(new_ws.p50, old_ws.p50)]
            + ([f"{cpu[0]:.0f}", f"{cpu[1]:.0f}", fmt_ratio(*cpu)] if all(cpu) else ["", "", ""])
        )
    header = ["server", "route", "conns", "req/s", f"req/s @{rev}", "req/s ratio", "p50 ms", f"p50 @{rev}"]
    header += ["p50 ratio", "CPU µs/req", f"CPU µs/req @{rev}", "CPU ratio"]
    return f"corral against corral@{rev} (the same routes, in the same run)\n" + render_table(
        header, rows, markdown, left=2
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load phase")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--rounds", type=int, default=1, help="measure every route this many times, in turns of both orders"
    )
    parser.add_argument("--ws-messages", type=int, default=5000)
    parser.add_argument(
        "--ws-only", action="store_true", help="only the WebSocket echo (every round), no HTTP routes"
    )
    parser.add_argument("--load", choices=["auto", "wrk", "python"], default="auto", help="load generator")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx reference proxy")
    parser.add_argument(
        "--runtime",
        choices=["process", "runc"],
        default="process",
        help="process: servers on the host (127.0.0.1); runc: in a real sandbox behind its veth (root)",
    )
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-granian", action="store_true", help="skip corral's ASGI app on Granian")
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also start REV's corral (a git worktree) and measure its gateway routes beside this tree's",
    )
    parser.add_argument(
        "--census",
        action="store_true",
        help="count the requests each corral's fast path took and declined, and why "
        "(bench/fast_path_census.py; costs CPU: not for timing)",
    )
    parser.add_argument(
        "--serve", nargs=3, metavar=("PORT", "GRANIAN_PORT", "DATA_DIR"), help=argparse.SUPPRESS
    )
    parser.add_argument("--code", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--census-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), int(args.serve[1]), args.serve[2], args.code, args.census_file)
        return
    if args.load == "wrk" and WRK is None:
        raise SystemExit("wrk is not installed (Debian package wrk)")
    args.wrk = WRK is not None and args.load != "python"
    args.nginx = None if args.no_nginx else binary()
    args.granian = not args.no_granian and args.runtime == "process" and has_granian()
    # Ctrl-C and SIGTERM end the run through its clean-up (even when started with SIGINT
    # ignored, as a background job is): asyncio.run cancels the run on SIGINT, and either
    # raises KeyboardInterrupt through the servers' contexts below.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-gateway-"))
    worktree = Worktree(args.baseline) if args.baseline else None
    try:
        with contextlib.ExitStack() as stack:
            gateways = [
                stack.enter_context(corral(args.runtime, tmp, args.granian, HEAD, NETWORK, args.census))
            ]
            if worktree is not None:
                stack.callback(worktree.remove)
                code = worktree.add()
                gateways.append(
                    stack.enter_context(corral(args.runtime, tmp, False, code, BASELINE_NETWORK, args.census))
                )
            print(
                f"load: {'wrk' if args.wrk else 'asyncio'}; corral at {', '.join(g.base for g in gateways)}"
            )
            result = asyncio.run(run(args, gateways, tmp))
        load_end = os.getloadavg()
        print(f"load average at start {fmt_load(load_start)}, at end {fmt_load(load_end)}")
        print(report(result, args.markdown, args.wrk))
        if args.census:
            print("\n" + census_report(gateways, args.markdown))
        if args.json:
            loads = [asdict(x) for x in result["loads"]]  # type: ignore[attr-defined]
            ws = {k: asdict(v) for k, v in result["ws"].items()}  # type: ignore[attr-defined]
            args.json.write_text(
                json.dumps(
                    {
                        "loads": loads,
                        "ws": ws,
                        "ws_cpu_us": result["ws_cpu"],
                        "load_generator": "wrk" if args.wrk else "asyncio",
                    },
                    indent=2,
                )
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def census_report(gateways: list[Gateway], markdown: bool) -> str:
    """Per corral, server and route: the requests its fast path took, those it declined
    by the step it stopped at, and those its ASGI gateway served (``fast_path_census``)."""
    rows = []
    for gateway in gateways:
        if gateway.census is None:
            continue
        server_of = {str(port): name for name, port in (gateway.ports or {}).items()}
        by: dict[tuple[str, str], dict[str, int]] = {}
        for key, count in gateway.census.items():
            port, route, outcome = key.split(" ", 2)
            by.setdefault((server_of.get(port, port), route), {})[outcome] = count
        for (server, route), outcomes in sorted(by.items()):
            served = outcomes.pop("served", 0)
            asgi = sum(v for k, v in outcomes.items() if k.startswith("asgi"))
            declined = {k: v for k, v in outcomes.items() if not k.startswith("asgi")}
            total = served + asgi
            rows.append(
                [
                    gateway.name,
                    server,
                    route,
                    f"{served:,}",
                    f"{served / total:.1%}" if total else "",
                    f"{asgi:,}",
                    ", ".join(f"{k} {v:,}" for k, v in sorted(declined.items())) or "-",
                ]
            )
    header = ["corral", "server", "route", "fast path", "of all", "ASGI path", "declined, at"]
    return "Fast path census (all phases, warm-up included)\n" + render_table(header, rows, markdown, left=3)


def fmt_load(load: tuple[float, float, float]) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def has_granian() -> bool:
    try:
        import granian  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def corral(
    runtime: str, tmp: Path, granian: bool, code: Code, network: Network, census: bool = False
) -> Iterator[Gateway]:
    """``code``'s corral serving on a free loopback port, as a ``Gateway``: its URL, an
    owner's API key, and the URL of the same app on Granian (process runtime and
    ``granian`` only, else None). On runc, with ``network`` and ``code``'s own base
    template; on the process runtime, ``--serve`` in a child importing ``code``'s corral
    (with ``census``, counting its fast path: ``Gateway.census`` once it stopped)."""
    if runtime == "runc":
        template_root(DEFAULT_CACHE, code)
        server = CorralServer(DEFAULT_CACHE / "templates", code=code, network=network)
        server.extra_env["CORRAL_STANDBY_SANDBOXES"] = "0"
        try:
            asyncio.run(server.start())
            yield Gateway(code.name, server.url, server.api_key)
        finally:
            server.stop()
        return
    port = free_port()
    granian_port = free_port() if granian else 0
    data = tmp / f"data-{code.name}"
    counts = tmp / f"census-{code.name}.json"
    process = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            str(port),
            str(granian_port),
            str(data),
            "--code",
            str(code.root or ROOT),
            *(["--census-file", str(counts)] if census else []),
        ]
    )
    gateway = None
    try:
        base = f"http://127.0.0.1:{port}"
        on_granian = f"http://127.0.0.1:{granian_port}" if granian else None
        deadline = time.monotonic() + 30
        for url in filter(None, (base, on_granian)):
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("corral did not start")
                time.sleep(0.1)
        gateway = Gateway(code.name, base, KEY, on_granian, process.pid)
        yield gateway
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
        if gateway is not None and counts.exists():
            gateway.census = json.loads(counts.read_text())


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
