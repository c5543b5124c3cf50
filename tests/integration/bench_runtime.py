"""Measure RuncRuntime: create -> agent ping latency, destroy time, idle memory.

    sudo .venv/bin/python -m tests.integration.bench_runtime [N]

Creates N (default 20) sandboxes from ``base`` one after another (each create ends
when the agent answers a ping), keeps them all idle for a moment, measures memory,
then destroys them one after another. Uses the integration tests' data dir and runc
root (see conftest.py), so the template is built once.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

from corral.domain import Limits, SandboxSpec
from corral.runtime.runc import RuncRuntime
from corral.runtime.templates import TemplateStore
from corral.settings import Settings
from tests.integration.conftest import DATA_DIR, RUNC_ROOT, new_id


def meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":")
        values[key] = int(value.split()[0]) * 1024
    return values


def rollup(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":")
        values[key] = int(value.split()[0]) * 1024
    return values


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    return f"median {statistics.median(ordered):6.1f} ms   p90 {p90:6.1f} ms   max {ordered[-1]:6.1f} ms"


async def main(count: int) -> None:
    settings = Settings(data_dir=DATA_DIR, runc_root=RUNC_ROOT)
    template = await TemplateStore(settings).get("base")
    runtime = RuncRuntime(settings)
    warm = new_id()  # first create formats the cached disk image and compiles the agent
    await runtime.create(SandboxSpec(warm, template, Limits()))
    await runtime.destroy(warm)

    before = meminfo()
    ids, creates = [], []
    for _ in range(count):
        sandbox_id = new_id()
        start = time.perf_counter()
        await runtime.create(SandboxSpec(sandbox_id, template, Limits()))
        creates.append((time.perf_counter() - start) * 1000)
        ids.append(sandbox_id)
    await asyncio.sleep(3)
    after = meminfo()

    rss, pss, cgroup = [], [], []
    for sandbox_id in ids:
        pid = await runtime.init_pid(sandbox_id)
        assert pid is not None
        numbers = rollup(pid)
        rss.append(numbers["Rss"])
        pss.append(numbers["Pss"])
        usage = Path(f"/sys/fs/cgroup/memory/corral/{sandbox_id}/memory.usage_in_bytes")
        cgroup.append(int(usage.read_text()))

    destroys = []
    for sandbox_id in ids:
        start = time.perf_counter()
        await runtime.destroy(sandbox_id)
        destroys.append((time.perf_counter() - start) * 1000)

    mib = 1024 * 1024
    print(f"sandboxes:              {count}, sequential, template base, default limits")
    print(f"create -> agent ping:   {summary(creates)}")
    print(f"destroy:                {summary(destroys)}")
    print(
        f"agent RSS / PSS:        {statistics.median(rss) / mib:.1f} / {statistics.median(pss) / mib:.1f} MiB"
    )
    print(f"cgroup memory.usage:    {statistics.median(cgroup) / mib:.1f} MiB (agent + page cache + kernel)")
    used = (before["MemAvailable"] - after["MemAvailable"]) / count / mib
    slab = (after["Slab"] - before["Slab"]) / count / mib
    print(f"host MemAvailable drop: {used:.1f} MiB per idle sandbox (of which slab {slab:.1f} MiB)")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20))
