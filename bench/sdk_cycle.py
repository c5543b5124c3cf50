"""One create -> ``true`` twice -> kill cycle through a client SDK, each step timed
(seconds; ``exec2``, the second command, is not part of ``cycle``), and the reference
every surface's benchmark runs beside its own: the OpenComputer Python SDK's."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from opencomputer import Sandbox

PARTS = ("cycle", "create", "exec", "exec2", "stop")


async def sdk_cycle(
    create: Callable[[], Awaitable[Any]],
    run_true: Callable[[Any], Awaitable[int]],
    kill: Callable[[Any], Awaitable[object]],
    close: Callable[[Any], Awaitable[object]] | None = None,
) -> dict[str, float]:
    """``run_true(sandbox)`` returns the command's exit code."""
    times: dict[str, float] = {}
    started = time.perf_counter()
    sandbox = await create()
    try:
        times["create"] = time.perf_counter() - started
        for part in ("exec", "exec2"):
            step = time.perf_counter()
            code = await run_true(sandbox)
            assert code == 0, code
            times[part] = time.perf_counter() - step
        step = time.perf_counter()
        await kill(sandbox)
        times["stop"] = time.perf_counter() - step
    finally:
        if close is not None:
            await close(sandbox)
    times["cycle"] = time.perf_counter() - started - times["exec2"]
    return times


async def opencomputer_cycle(url: str, key: str) -> dict[str, float]:
    async def run_true(sandbox: Sandbox) -> int:
        return int((await sandbox.exec.run("true")).exit_code)

    return await sdk_cycle(
        lambda: Sandbox.create(template="base", api_url=url, api_key=key),
        run_true,
        lambda sandbox: sandbox.kill(),
        lambda sandbox: sandbox.close(),
    )
