#!/usr/bin/env python3
"""How a sandbox's nftables attach and detach cost with other sandboxes already in
the table (docs/benchmarks.md, "One more sandbox costs the same").

Run as root from the repository root:

    .venv/bin/python bench/bench_nft.py                  # 0, 250, 1000 in the table
    .venv/bin/python bench/bench_nft.py --counts 0 100

It sets up a table of its own (``cnftb``, corral's firewall on a pool it never routes),
fills it with sandboxes through ``Firewall.attach`` up to each count (each deny_all
with one allowed network and ``--pins`` pinned addresses, as the resolver writes
them), then times ``--samples`` attaches and detaches of one more with the same
policy and pins (p50; the pins are written between the two, untimed), by turns with
one more in a second, empty table (``cnftbz``), so that both see the same load (a
deletion waits for an RCU grace period, ~15 ms, whose length follows the machine's
load, not the table). The tables are deleted at the end, Ctrl-C included. The host's other tables count too: libnftables
reads the whole ruleset before each transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time

from corral import ids
from corral.domain import EgressMode
from corral.network.firewall import Firewall
from corral.network.policy import Rules

POOL = ipaddress.IPv4Network("10.250.0.0/16")


def deny_all() -> Rules:
    allow = (ipaddress.IPv4Network("198.51.100.0/24"),)
    return Rules(EgressMode.DENY_ALL, allow, (), frozenset(), (), False, frozenset(), (), False)


def pins(count: int) -> list[tuple[str, int]]:
    return [(f"203.0.113.{n + 1}", 600) for n in range(count)]


async def one(firewall: Firewall, address: str, n: int, npins: int) -> tuple[float, float]:
    """(attach, detach) seconds of one more sandbox at ``address``."""
    sid = ids.new_id("sb")
    start = time.perf_counter()
    await firewall.attach(sid, f"vx{n}", address, deny_all())
    attach = time.perf_counter() - start
    await firewall.pin(sid, "pin", pins(npins))
    start = time.perf_counter()
    await firewall.detach(sid, f"vx{n}", address)
    return attach, time.perf_counter() - start


def p50(values: list[float]) -> float:
    return sorted(values)[len(values) // 2] * 1000


async def main(counts: list[int], samples: int, npins: int) -> None:
    firewall = Firewall(table="cnftb", bridge="cnftb0", network=POOL, gateway=POOL[1], group=250)
    empty = Firewall(table="cnftbz", bridge="cnftbz0", network=POOL, gateway=POOL[1], group=251)
    await firewall.setup()
    await empty.setup()
    addresses = POOL.hosts()
    next(addresses)
    try:
        made = 0
        for count in counts:
            while made < count:
                sid = ids.new_id("sb")
                await firewall.attach(sid, f"vb{made}", str(next(addresses)), deny_all())
                await firewall.pin(sid, "pin", pins(npins))
                made += 1
            times: dict[str, list[float]] = {"attach": [], "detach": [], "attach0": [], "detach0": []}
            for n in range(samples):  # one more in each table by turns: the same load for both
                for table, suffix in ((firewall, ""), (empty, "0")):
                    attach, detach = await one(table, str(next(addresses)), n, npins)
                    times["attach" + suffix].append(attach)
                    times["detach" + suffix].append(detach)
            a, d, a0, d0 = (p50(times[k]) for k in ("attach", "detach", "attach0", "detach0"))
            print(
                f"{count} in the table: attach p50 {a:.1f} ms, detach p50 {d:.1f} ms"
                f" (an empty table meanwhile: {a0:.1f}, {d0:.1f}; ratio {a / a0:.2f}x, {d / d0:.2f}x)",
                flush=True,
            )
    finally:
        await firewall.remove_all()
        await empty.remove_all()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs="+", default=[0, 250, 1000])
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--pins", type=int, default=4, help="pinned addresses per sandbox (default 4)")
    args = p.parse_args()
    asyncio.run(main(args.counts, args.samples, args.pins))
