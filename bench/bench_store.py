#!/usr/bin/env python3
"""What the store's hot calls cost the server: CPU a call (all of the process's threads:
the event loop's, the driver's, the store's) of the three a create makes or may make
(the admission's ``holdings``, the sandbox's ``add``, ``find``) and of an audit batch's
``append``, on a SQLite file in a temporary dir, as the embedded default runs it.

    .venv/bin/python bench/bench_store.py                  # this tree
    .venv/bin/python bench/bench_store.py --baseline REV   # and REV's store, in turns

Each round times ``--calls`` calls of one kind one after the other (and ``add`` also
``--calls`` at once, as a burst's creates write); the table gives the median of the
rounds. With ``--baseline``, REV is checked out as a worktree (``baseline.py``) and the
same script runs there in a process of its own, in turns with this tree's. Everything
made is removed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

KINDS = ("holdings", "add", "find", "add, all at once", "append of 100 events")


async def measure(calls: int, rounds: int) -> dict[str, float]:
    """Median CPU ms a call of each kind, in this process's store."""
    from corral.domain import Event
    from corral.store.database import Database
    from corral.store.events import SqlEventStore
    from corral.store.keys import SqlKeyStore
    from corral.store.sandboxes import SqlSandboxStore
    from tests.unit.store.test_store import sandbox  # the store tests' row (every revision has it)

    with tempfile.TemporaryDirectory(prefix="corral-bench-store-") as tmp:
        db = await Database.open(f"sqlite+aiosqlite:///{tmp}/corral.db")
        try:
            await SqlKeyStore(db).add_org("org-aaaaaaaa", "a")
            store, events = SqlSandboxStore(db), SqlEventStore(db)
            made = iter(range(10**9))
            ids: list[str] = []

            async def add() -> None:
                ids.append(f"sb-{next(made):08x}")
                await store.add(sandbox(ids[-1], "org-aaaaaaaa"))

            async def find() -> None:
                await store.find(ids[len(ids) // 2])

            batch = [
                Event(
                    at=datetime.now(UTC), org_id="org-aaaaaaaa", kind="sandbox.created", sandbox_id=f"sb-{n}"
                )
                for n in range(100)
            ]

            async def holdings() -> None:
                if hasattr(store, "holdings"):
                    await store.holdings("org-aaaaaaaa")
                else:  # a revision before it: the two reads it replaced
                    await getattr(store, "count_live")("org-aaaaaaaa")  # noqa: B009
                    await getattr(store, "promised")()  # noqa: B009

            one_by_one: dict[str, Callable[[], Awaitable[object]]] = {
                "holdings": holdings,
                "add": add,
                "find": find,
                "append of 100 events": lambda: events.append(batch),
            }
            results: dict[str, list[float]] = {kind: [] for kind in KINDS}
            for _ in range(rounds):
                for kind, call in one_by_one.items():
                    started = time.process_time()
                    for _ in range(calls):
                        await call()
                    results[kind].append((time.process_time() - started) / calls * 1000)
                started = time.process_time()
                await asyncio.gather(*(add() for _ in range(calls)))
                results["add, all at once"].append((time.process_time() - started) / calls * 1000)
            return {kind: statistics.median(values) for kind, values in results.items()}
        finally:
            await db.close()


def run_in(code_dir: Path, calls: int, rounds: int) -> dict[str, float]:
    """``measure`` in a python of its own importing corral from ``code_dir``."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    argv = [sys.executable, __file__, "--calls", str(calls), "--rounds", str(rounds), "--json"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd=code_dir)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200, help="calls of each kind a round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--turns", type=int, default=2, help="with --baseline: turns of each tree")
    p.add_argument("--baseline", help="also measure this revision's store, in turns")
    p.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.json:
        print(json.dumps(asyncio.run(measure(args.calls, args.rounds))))
        return 0
    repo = Path(__file__).resolve().parents[1]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}", flush=True)
    trees: list[tuple[str, Path]] = [("this tree", repo)]
    worktree = None
    if args.baseline:
        from baseline import Worktree

        worktree = Worktree(args.baseline)
        code = worktree.add()
        assert code.root is not None
        trees.append((code.name, code.root))
    try:
        seen: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
        for _ in range(args.turns if worktree else 1):
            for name, path in trees:
                seen[name].append(run_in(path, args.calls, args.rounds))
    finally:
        if worktree is not None:
            worktree.remove()
    header = "| CPU ms a call | " + " | ".join(name for name, _ in trees) + " |"
    print("\n" + header + "\n|---|" + "---:|" * len(trees))
    for kind in KINDS:
        cells = [f"{statistics.median(turn[kind] for turn in seen[name]):.2f}" for name, _ in trees]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
