"""Standby sandboxes on runc, for every template in use and any limits: a create of
another template is served from its own standby once it is in demand; a create with
other limits, envs, metadata and egress policy is served from one, its limits in effect
(the host's cgroup files, the disk as seen inside), its envs, metadata and policy
applied at the claim (a connection to a namespace of the test's refused under
``deny_all``, made under the default); what stands by never exceeds the budget; a
claimed one is replaced.

The core is built in this process on the integration data dir (``base`` built once; the
other template is ``base``'s root under another name and digest, as a Dockerfile
template ``FROM base`` with no step would be) with a store and a network of its own
(bridge ``crls<tag>``), removed at the end; it does not reconcile."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import EgressMode, EgressPolicy, ExecRequest, Template
from corral.ids import new_id
from corral.ports import ProgressFn, Templates
from corral.runtime.templates import TemplateStore
from corral.services.sandboxes import CreateSandbox
from corral.services.standby import Standby
from corral.settings import Settings
from tests.integration.test_runtime import MIB, cgroup_value
from tests.support.conditions import eventually_async
from tests.support.network_world import World, made_world

pytestmark = pytest.mark.integration

KEY = "ek_standby01_" + "s" * 32
OTHER = "other"
BUDGET = 3


class WithOther:
    """The node's templates and ``other``: ``base``'s root under another name."""

    def __init__(self, inner: Templates, base: Template) -> None:
        self.inner = inner
        self.other = replace(base, name=OTHER, digest="0" * 8 + base.digest[8:])

    def known(self) -> list[str]:
        return [*self.inner.known(), OTHER]

    async def get(self, name: str) -> Template:
        return self.other if name == OTHER else await self.inner.get(name)

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template:
        return self.other if name == OTHER else await self.inner.build(name, progress, force)

    async def list(self) -> list[Template]:
        return [*await self.inner.list(), self.other]

    async def find(self, name: str, digest: str) -> Template | None:
        if name == OTHER:
            return self.other if digest == self.other.digest else None
        return await self.inner.find(name, digest)


@dataclass
class Node:
    core: Core
    me: Principal
    world: World

    @property
    def standby(self) -> Standby:
        assert self.core.sandboxes.standby is not None
        return self.core.sandboxes.standby

    def standing(self, template: str) -> list[str]:
        return [entry.id for entry in self.standby._ready.get(template, ())]

    async def sh(self, sandbox_id: str, script: str) -> str:
        done = await self.core.commands.run(
            self.me, sandbox_id, ExecRequest("sh", ("-c", script), timeout_s=30)
        )
        return done.stdout.decode()

    async def reaches(self, sandbox_id: str, address: str) -> bool:
        probe = (
            "python3 -c 'import socket,sys\ntry: socket.create_connection((sys.argv[1], 80), timeout=2); print(1)\n"
            f"except OSError: print(0)' {address}"
        )
        return (await self.sh(sandbox_id, probe)).strip() == "1"


@pytest.fixture
async def node(settings: Settings, base_template: Template, tmp_path: Path) -> AsyncIterator[Node]:
    tag = secrets.token_hex(2)
    bridge = f"crls{tag}"
    own = Settings(
        data_dir=settings.data_dir,
        runc_root=settings.runc_root,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",
        runtime="runc",
        api_key=KEY,
        default_memory_mb=512,
        standby_memory_mb=BUDGET * 512 + 100,
        reaper_interval_s=3600,
        network_bridge=bridge,
        network_pool=f"10.252.{int(tag, 16) % 256}.0/24",
        network_nflog_group=4000 + int(tag, 16) % 1000,
        network_state_dir=tmp_path / "network",
        network_ready_namespaces=0,
        network_dns_upstreams=[],
    )
    with made_world() as world:
        try:
            core = await Core.open(
                own, templates=WithOther(TemplateStore(own), base_template), reconcile=False
            )
            org = await core.auth.keys.add_org(new_id("org"), f"standby-{tag}")
            try:
                me = await core.auth.authenticate_key((await core.auth.create_key(org.id, "owner")).raw)
                yield Node(core, me, world)
            finally:
                for sandbox in await core.sandboxes.store.list_all(live_only=True):
                    if sandbox.org_id == org.id:
                        await core.runtime.destroy(sandbox.id)
                await core.close()  # the standbys removed
        finally:
            for command in (
                ["nft", "delete", "table", "inet", bridge],
                ["nft", "delete", "table", "bridge", bridge],
                ["ip", "link", "del", bridge],
            ):
                done = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.DEVNULL)
                await done.wait()


async def test_every_template_in_use_and_any_limits_are_served_from_standby(node: Node) -> None:
    standby, sandboxes, me = node.standby, node.core.sandboxes, node.me
    assert standby.budget == BUDGET
    await eventually_async(lambda: len(node.standing("base")) == BUDGET, 60, "base not standing by")

    # another template: its first create starts a sandbox, and makes it one in demand
    first = await sandboxes.create(me, CreateSandbox(template=OTHER))
    assert first.id not in node.standing("base")
    await eventually_async(lambda: len(node.standing(OTHER)) == 1, 60, "other not standing by")
    assert standby.ready <= BUDGET  # a base one gave way to it
    ahead = node.standing(OTHER)[0]
    second = await sandboxes.create(me, CreateSandbox(template=OTHER))
    assert second.id == ahead and second.template == OTHER
    assert (await node.sh(second.id, "hostname")).strip() == second.id

    # other limits, envs, metadata, a deny_all policy: all given to a base one at the claim
    await eventually_async(lambda: standby.ready == BUDGET, 60, "not refilled")
    assert node.standing("base") and len(node.standing(OTHER)) == 2  # base 1 + 0, other 1 + 2 creates
    ahead = node.standing("base")[0]
    req = CreateSandbox(
        memory_mb=256,
        cpu_count=2,
        disk_mb=1024,
        envs={"A": "1"},
        metadata={"k": "v"},
        egress=EgressPolicy(EgressMode.DENY_ALL),
    )
    limited = await sandboxes.create(me, req)
    assert limited.id == ahead
    assert int(cgroup_value("memory", limited.id, "memory.limit_in_bytes")) == 256 * MIB
    assert int(cgroup_value("cpu", limited.id, "cpu.cfs_quota_us")) == 200_000
    avail = int((await node.sh(limited.id, "df -BM --output=avail / | tail -1")).strip().rstrip("M"))
    assert 900 < avail <= 1024, avail  # less than the 2048 it stood by with
    disk = await node.core.runtime.agent(limited.id).disk()  # the agent's report: its limit, not the room
    assert 900 * MIB < disk.total <= 1024 * MIB, disk
    assert (await node.sh(limited.id, "echo $A")).strip() == "1"
    assert (await sandboxes.get(me, limited.id)).metadata == {"k": "v"}
    assert not await node.reaches(limited.id, node.world.out2)

    # the claimed one is replaced; a default create from standby reaches what deny_all did not
    await eventually_async(lambda: standby.ready == BUDGET, 60, "the claimed one not replaced")
    assert node.standing("base") and ahead not in node.standing("base")
    ahead = node.standing("base")[0]
    plain = await sandboxes.create(me, CreateSandbox())
    assert plain.id == ahead
    assert await node.reaches(plain.id, node.world.out2)
    assert standby.ready <= BUDGET
    assert metric(node, 'corral_standby_claims_total{result="miss"}') == 1.0  # the first of other
    assert metric(node, 'corral_standby_claims_total{result="hit"}') == 3.0


def metric(node: Node, name: str) -> float:
    text = node.core.metrics.render().decode()
    return float(text.split(f"\n{name} ", 1)[1].split("\n", 1)[0])
