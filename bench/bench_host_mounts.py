#!/usr/bin/env python3
"""What the host's mount count costs a container's start: raw ``runc run`` + ``runc
exec`` with N extra mounts on the host, in turns with none.

Run as root from the repository root:

    .venv/bin/python bench/bench_host_mounts.py                    # 0 and 1,000, twice
    .venv/bin/python bench/bench_host_mounts.py --mounts 250 1000 --samples 20

A container's new mount namespace starts as a copy of the host's, and runc then detaches
the old root after pivot_root: both walk every mount. corral adds ~4 host mounts a
sandbox (its disk, its root, the sysfs of its network namespace, the namespace's bind
under /run/netns), so a node's creates get slower as its sandboxes add up. This
measures the effect on raw runc (``reference.RawRunc``: overlay root, corral's seccomp
profile), so corral's own work is not in it. The extra mounts are small tmpfs mounts
under a temporary dir; each phase's are unmounted before the next; everything made is
removed, Ctrl-C included. Prints the p50 and p90 wall of one container's run + exec, one
at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import entry
from corral_target import DEFAULT_CACHE, ensure_template_cache, template_roots
from reference import RawRunc
from stats import Summary, fmt_ms


def mount_many(parent: Path, count: int) -> list[Path]:
    made: list[Path] = []
    try:
        for n in range(count):
            target = parent / f"m{n}"
            target.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], check=True)
            made.append(target)
    except BaseException:
        unmount_all(made)
        raise
    return made


def unmount_all(targets: list[Path]) -> None:
    for target in reversed(targets):
        subprocess.run(["umount", str(target)], check=False)


async def one_phase(runc: RawRunc, samples: int) -> Summary:
    walls: list[float] = []
    made: list[str] = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            cid = await runc.create()
            made.append(cid)
            await runc.exec_true(cid)
            walls.append(time.perf_counter() - started)
    finally:
        for cid in made:
            await runc.kill(cid)
    return Summary.of(walls)


async def main_async(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("run as root: runc, mounts and cgroups need it", file=sys.stderr)
        return 2
    rootfs = template_roots(ensure_template_cache(args.template_cache or DEFAULT_CACHE))[0]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runc = RawRunc(rootfs, f"cm{secrets.token_hex(3)}")
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="corral-bench-mounts-") as parent:
        await runc.setup()
        try:
            for _ in range(args.rounds):
                for count in [0, *args.mounts]:
                    extra = await asyncio.to_thread(mount_many, Path(parent), count)
                    try:
                        summary = await one_phase(runc, args.samples)
                    finally:
                        await asyncio.to_thread(unmount_all, extra)
                    row = f"| {count} | {fmt_ms(summary.p50)} | {fmt_ms(summary.p90)} |"
                    print(row, flush=True)
                    rows.append(row)
        finally:
            await runc.close()
    print("\n| extra host mounts | run + exec p50 ms | p90 ms |\n|---:|---:|---:|")
    print("\n".join(rows))
    return 0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--mounts", type=int, nargs="+", default=[1000], help="extra host mounts to compare with none"
    )
    p.add_argument("--samples", type=int, default=30, help="containers per phase, one at a time")
    p.add_argument("--rounds", type=int, default=2, help="turns of every phase")
    p.add_argument(
        "--template-cache", type=Path, help=f"a data dir with the base template (default {DEFAULT_CACHE})"
    )
    return p.parse_args()


def main() -> int:
    return entry.run(main_async, parse_args())


if __name__ == "__main__":
    sys.exit(main())
