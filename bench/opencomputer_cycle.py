"""The reference cycle every surface's benchmark runs beside its own: ``Sandbox.create``
-> ``exec.run("true")`` twice -> ``kill`` through the OpenComputer Python SDK, each step
timed (seconds; ``exec2``, the second command, is not part of ``cycle``)."""

from __future__ import annotations

import time

from opencomputer import Sandbox

PARTS = ("cycle", "create", "exec", "exec2", "stop")


async def opencomputer_cycle(url: str, key: str) -> dict[str, float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    sandbox = await Sandbox.create(template="base", api_url=url, api_key=key)
    try:
        times["create"] = time.perf_counter() - started
        for part in ("exec", "exec2"):
            step = time.perf_counter()
            ran = await sandbox.exec.run("true")
            assert ran.exit_code == 0, ran
            times[part] = time.perf_counter() - step
        step = time.perf_counter()
        await sandbox.kill()
        times["stop"] = time.perf_counter() - step
    finally:
        await sandbox.close()
    times["cycle"] = time.perf_counter() - started - times["exec2"]
    return times
