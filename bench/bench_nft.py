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
policy and pins (p50; the pins are written between the two, untimed). The table is
deleted at the end, Ctrl-C included. The host's other tables count too: libnftables
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

POOL = ipaddress.ip_network("10.250.0.0/16")


def deny_all() -> Rules:
    allow = (ipaddress.ip_network("198.51.100.0/24"),)
    return Rules(EgressMode.DENY_ALL, allow, (), frozenset(), (), False, frozenset(), (), False)


def pins(count: int) -> list[tuple[str, int]]:
    return [(f"203.0.113.{n + 1}", 600) for n in range(count)]


async def main(counts: list[int], samples: int, npins: int) -> None:
    firewall = Firewall(table="cnftb", bridge="cnftb0", network=POOL, gateway=POOL[1], group=250)
    await firewall.setup()
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
            attach, detach = [], []
            for n in range(samples):
                sid, address = ids.new_id("sb"), str(next(addresses))
                start = time.perf_counter()
                await firewall.attach(sid, f"vx{n}", address, deny_all())
                attach.append(time.perf_counter() - start)
                await firewall.pin(sid, "pin", pins(npins))
                start = time.perf_counter()
                await firewall.detach(sid, f"vx{n}", address)
                detach.append(time.perf_counter() - start)
            attach.sort()
            detach.sort()
            print(
                f"{count} in the table: attach p50 {attach[samples // 2] * 1000:.1f} ms, "
                f"detach p50 {detach[samples // 2] * 1000:.1f} ms",
                flush=True,
            )
    finally:
        await firewall.remove_all()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", type=int, nargs="+", default=[0, 250, 1000])
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--pins", type=int, default=4, help="pinned addresses per sandbox (default 4)")
    args = p.parse_args()
    asyncio.run(main(args.counts, args.samples, args.pins))
