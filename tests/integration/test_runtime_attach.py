"""RuncRuntime.create attaches the network side by side with the disk's steps: a
failure on either side leaves nothing of the other (root, real runc)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.domain import EgressPolicy, Limits, SandboxSpec, Template
from corral.errors import RuntimeFailure
from corral.ports import NetInfo
from corral.runtime.runc import RuncRuntime
from corral.settings import Settings
from tests.integration.conftest import new_id
from tests.integration.test_runtime_network import NETNS_DIR, LoopbackNetwork
from tests.integration.traces import traces

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def leaving_nothing(
    runtime: RuncRuntime, network: LoopbackNetwork, sandbox_id: str
) -> AsyncIterator[None]:
    """The test's create and checks; then what the create made is removed, should it
    have succeeded after all (a failed check must not leave a sandbox on the machine)."""
    try:
        yield
    finally:
        await runtime.destroy(sandbox_id)
        await network.detach(sandbox_id)


class SlowNetwork(LoopbackNetwork):
    """Attaches (or fails to) once ``go`` is set; ``done`` once it attached."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.attached: list[str] = []
        self.go = asyncio.Event()
        self.done = asyncio.Event()

    async def attach(self, sandbox_id: str, policy: EgressPolicy) -> NetInfo:
        await self.go.wait()
        if self.fail:
            raise RuntimeFailure("no network today")
        info = await super().attach(sandbox_id, policy)
        self.attached.append(sandbox_id)
        self.done.set()
        return info


async def test_a_failed_disk_step_detaches_the_network(
    settings: Settings, base_template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = SlowNetwork()
    network.go.set()
    runtime = RuncRuntime(settings, network=network)

    async def broken(*_args: object) -> None:
        await network.done.wait()  # the attach is done
        raise OSError("no loop device")

    monkeypatch.setattr(runtime._disks, "make", broken)
    sandbox_id = new_id()
    async with leaving_nothing(runtime, network, sandbox_id):
        with pytest.raises(RuntimeFailure, match="no loop device"):
            await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
        assert network.attached == [sandbox_id]
        assert not (NETNS_DIR / network.name(sandbox_id)).exists()
        assert traces(settings, sandbox_id) == []


async def test_a_disk_step_failing_first_stops_the_attach(
    settings: Settings, base_template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = SlowNetwork()
    runtime = RuncRuntime(settings, network=network)

    async def broken(*_args: object) -> None:
        raise OSError("no loop device")

    monkeypatch.setattr(runtime._disks, "make", broken)
    sandbox_id = new_id()
    async with leaving_nothing(runtime, network, sandbox_id):
        with pytest.raises(RuntimeFailure):  # the attach waits on go, never set: cancelled
            await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
        assert network.attached == [], "cancelled before it attached"
        assert not (NETNS_DIR / network.name(sandbox_id)).exists()
        assert traces(settings, sandbox_id) == []


async def test_a_failed_attach_leaves_no_disk(
    settings: Settings, base_template: Template, monkeypatch: pytest.MonkeyPatch
) -> None:
    network = SlowNetwork(fail=True)
    runtime = RuncRuntime(settings, network=network)
    make = runtime._disks.make

    async def made(*args: Path | int) -> None:
        await make(*args)  # type: ignore[arg-type]
        network.go.set()  # the attach fails once the disk is mounted

    monkeypatch.setattr(runtime._disks, "make", made)
    sandbox_id = new_id()
    async with leaving_nothing(runtime, network, sandbox_id):
        with pytest.raises(RuntimeFailure, match="no network today"):
            await runtime.create(SandboxSpec(sandbox_id, base_template, Limits()))
        assert traces(settings, sandbox_id) == []
