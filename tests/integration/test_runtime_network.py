"""RuncRuntime with a network adapter: the sandbox joins a network namespace the host
made (as the real Network adapter does), instead of one runc makes.

The adapter here is a minimal stand-in (``ip netns add`` and ``lo`` up, no veth): it
checks the runtime's side of the contract: joining the namespace, the sysfs the
runtime mounts for it, resolv.conf from the gateway, address(), detach on destroy and
reclaim of the adapter's leftovers.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from corral.domain import EgressPolicy, ExecRequest, Limits, SandboxSpec, Template
from corral.errors import NotFound, Unavailable
from corral.ports import NetInfo
from corral.runtime.runc import RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import new_id
from tests.integration.traces import traces

pytestmark = pytest.mark.integration

NETNS_DIR = Path("/run/netns")


async def ip(*args: str) -> None:
    proc = await asyncio.create_subprocess_exec("ip", *args, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {err.decode()}")


class LoopbackNetwork:
    """A netns per sandbox with only ``lo`` in it, named ``corral-test-<id>``."""

    def __init__(self) -> None:
        self.policies: dict[str, EgressPolicy] = {}

    @staticmethod
    def name(sandbox_id: str) -> str:
        return f"corral-test-{sandbox_id}"

    async def attach(self, sandbox_id: str, policy: EgressPolicy) -> NetInfo:
        await ip("netns", "add", self.name(sandbox_id))
        await ip("-n", self.name(sandbox_id), "link", "set", "lo", "up")
        self.policies[sandbox_id] = policy
        return NetInfo(str(NETNS_DIR / self.name(sandbox_id)), "10.99.0.2", "10.99.0.1")

    async def detach(self, sandbox_id: str) -> None:
        if (NETNS_DIR / self.name(sandbox_id)).exists():
            await ip("netns", "delete", self.name(sandbox_id))
        self.policies.pop(sandbox_id, None)

    async def set_policy(self, sandbox_id: str, policy: EgressPolicy) -> None:
        self.policies[sandbox_id] = policy

    async def info(self, sandbox_id: str) -> NetInfo | None:
        if not (NETNS_DIR / self.name(sandbox_id)).exists():
            return None
        return NetInfo(str(NETNS_DIR / self.name(sandbox_id)), "10.99.0.2", "10.99.0.1")

    async def reclaim(self, keep: set[str]) -> list[str]:
        removed = []
        for path in NETNS_DIR.glob("corral-test-sb-*") if NETNS_DIR.exists() else []:
            sandbox_id = path.name.removeprefix("corral-test-")
            if sandbox_id not in keep:
                await self.detach(sandbox_id)
                removed.append(sandbox_id)
        return removed


async def test_sandbox_joins_the_host_made_namespace(settings: Settings, base_template: Template) -> None:
    network = LoopbackNetwork()
    runtime = RuncRuntime(settings, network=network)
    sandbox_id = new_id()
    await runtime.create(SandboxSpec(sandbox_id, base_template, Limits(memory_mb=300)))
    try:
        probe = (
            "import os\n"
            "print(sorted(os.listdir('/sys/class/net')))\n"
            "print(int(open('/sys/class/net/lo/flags').read(), 16) & 1)\n"
            "print(open('/etc/resolv.conf').read().split())\n"
            "print(open('/sys/fs/cgroup/memory/memory.limit_in_bytes').read().strip())\n"
            "print([line.split()[4] for line in open('/proc/self/mountinfo')].count('/sys'))\n"
        )
        result = await runtime.agent(sandbox_id).exec(ExecRequest("python3", ("-c", probe), timeout_s=20))
        lines = result.stdout.decode().splitlines()
        assert lines == ["['lo']", "1", "['nameserver', '10.99.0.1']", str(300 << 20), "1"], result
        # root inside may not reconfigure the namespace the host owns
        down = await runtime.agent(sandbox_id).exec(
            ExecRequest("python3", ("-c", "open('/proc/sys/net/ipv4/ip_forward', 'w').write('1')"))
        )
        assert down.exit_code != 0
        assert await runtime.address(sandbox_id) == "10.99.0.2"
        await runtime.set_egress(sandbox_id, EgressPolicy())
    finally:
        await runtime.destroy(sandbox_id)
    assert traces(settings, sandbox_id) == []
    assert not (NETNS_DIR / network.name(sandbox_id)).exists()


async def test_reclaim_includes_the_network(settings: Settings) -> None:
    network = LoopbackNetwork()
    runtime = RuncRuntime(settings, network=network)
    orphan = new_id()
    await network.attach(orphan, EgressPolicy())  # a netns whose sandbox never started
    others = await runtime.list_ids()
    assert orphan in await runtime.reclaim(keep=others)
    assert not (NETNS_DIR / network.name(orphan)).exists()


async def test_without_a_network_there_is_no_address(settings: Settings) -> None:
    runtime = RuncRuntime(settings)
    with pytest.raises(NotFound):
        await runtime.address(new_id())
    with pytest.raises(Unavailable):
        await runtime.set_egress(new_id(), EgressPolicy())
