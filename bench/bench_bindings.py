"""What the service-binding forwarder costs a call (issue 11, item 7), on loopback.

The test upstream (``tests/support/upstream.py``: a threaded HTTP/1.1 server) is called
by one keep-alive httpx client, directly and through a ``Forwarder`` granting the
client's address one binding, taking turns in rounds: small GETs one after another
(latency), and 64 MiB answers streamed (throughput). The forwarder runs in this
process's event loop, the client too; the upstream in threads of its own.

    .venv/bin/python bench/bench_bindings.py [--calls 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from stats import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corral.domain.bindings import binding
from corral.network.forwarder import Forwarder
from tests.support.upstream import Upstream

BIG = 64 * 1024 * 1024


async def latencies(http: httpx.AsyncClient, url: str, calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        answer = await http.get(url)
        samples.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return samples


async def throughput(http: httpx.AsyncClient, url: str) -> float:
    """MiB/s of one streamed answer of ``BIG`` bytes."""
    started = time.perf_counter()
    got = 0
    async with http.stream("GET", url) as answer:
        async for chunk in answer.aiter_raw():
            got += len(chunk)
    assert got == BIG, got
    return BIG / (time.perf_counter() - started) / (1024 * 1024)


async def main(calls: int, rounds: int) -> None:
    upstream = Upstream().start()
    forwarder = Forwarder()
    await forwarder.start("127.0.0.1")
    bound = binding("org-bench", "bench", upstream.url, "X-Api-Key", "s", datetime.now(UTC))
    via = forwarder.grant("sb-benchbench00", "127.0.0.1", [bound])["bench"]
    targets = {"direct": upstream.url, "forwarded": via}
    small: dict[str, list[float]] = {name: [] for name in targets}
    big: dict[str, list[float]] = {name: [] for name in targets}
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            for name, base in targets.items():  # warm-up
                await latencies(http, f"{base}/x", 20)
            for _ in range(rounds):
                for name, base in targets.items():
                    small[name] += await latencies(http, f"{base}/x", calls)
                    big[name].append(await throughput(http, f"{base}/bytes/{BIG}"))
    finally:
        await forwarder.close()
        upstream.stop()
    print(f"{'':10} {'p50':>9} {'p95':>9} {'p99':>9} {'MiB/s (best of rounds)':>24}")
    for name in targets:
        ms = [percentile(small[name], p) * 1000 for p in (50, 95, 99)]
        print(f"{name:10} {ms[0]:7.2f}ms {ms[1]:7.2f}ms {ms[2]:7.2f}ms {max(big[name]):24.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
