"""What the benchmarks that start their own ``corral serve`` share at their entry point:
the server options, and running the bench so that Ctrl-C or SIGTERM end it through its
own clean-up."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from corral_target import DEFAULT_CACHE


def add_server_options(p: argparse.ArgumentParser) -> None:
    """``--template-cache``, ``--workdir``, ``--server-log`` and ``--env``: where the
    server's templates come from, where its data dir goes, its log kept, more settings."""
    p.add_argument("--template-cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--server-log", type=Path, default=None, help="keep the server's log here")
    p.add_argument("--env", nargs="*", default=[], help="more NAME=value settings for the server")


def run(main: Callable[[argparse.Namespace], Coroutine[Any, Any, int]], args: argparse.Namespace) -> int:
    """``main(args)``'s exit status; SIGINT and SIGTERM cancel it (its ``finally`` blocks
    remove what it made), and then 130."""
    loop = asyncio.new_event_loop()
    task = loop.create_task(main(args))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        print("interrupted; cleaned up", file=sys.stderr)
        return 130
    finally:
        loop.close()
