"""Creating sandboxes: the cap of live sandboxes per org and the kill switch (in memory
and kept in the store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain.killswitch import GLOBAL
from corral.errors import Conflict, Forbidden, Unavailable
from corral.ids import new_id
from corral.runtime.memory import FakeRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.unit.services.conftest import ready


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    settings = Settings(
        data_dir=tmp_path, runtime="process", reaper_interval_s=3600, max_live_sandboxes_per_org=2
    )
    c = await Core.open(settings, runtime=FakeRuntime(), templates=StaticTemplates())
    yield c
    for sb in await c.sandboxes.store.list_all(live_only=True):
        await c.runtime.destroy(sb.id)
    await c.close()


async def principals(core: Core) -> tuple[Principal, Principal]:
    assert core.bootstrap_key
    mine = await core.auth.authenticate_key(core.bootstrap_key)
    org = await core.auth.keys.add_org(new_id("org"), "rival")
    return mine, Principal(org.id, Role.OWNER, key_id="rival")


async def test_the_cap_holds_under_concurrent_creates(core: Core) -> None:
    me, rival = await principals(core)
    results = await asyncio.gather(
        *(core.sandboxes.create(me, CreateSandbox()) for _ in range(5)), return_exceptions=True
    )
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    # never over the cap; a create that ends while another is checked may be counted
    # twice by that check (refused, never missed): the cap is then reached one by one
    assert 1 <= len(made) <= 2 and len(made) + len(refused) == 5
    assert all(isinstance(r, Conflict) and "at most 2" in r.message for r in refused)
    while len(made) < 2:
        made.append(await core.sandboxes.create(me, CreateSandbox()))
    with pytest.raises(Conflict, match="at most 2"):
        await core.sandboxes.create(me, CreateSandbox())
    await core.sandboxes.create(rival, CreateSandbox())  # another org has its own cap
    await core.sandboxes.kill(me, made[0].id)
    await core.sandboxes.create(me, CreateSandbox())


async def test_a_viewer_cannot_create(core: Core) -> None:
    me, _ = await principals(core)
    viewer = Principal(me.org_id, Role.VIEWER)
    with pytest.raises(Forbidden):
        await core.sandboxes.create(viewer, CreateSandbox())
    assert await core.sandboxes.list(viewer) == []


async def test_the_kill_switch_globally_and_per_org(core: Core) -> None:
    me, rival = await principals(core)
    core.kill_switch.engage()
    for who in (me, rival):
        with pytest.raises(Unavailable):
            await core.sandboxes.create(who, CreateSandbox())
    core.kill_switch.release()
    core.kill_switch.engage(me.org_id)
    with pytest.raises(Unavailable):
        await core.sandboxes.create(me, CreateSandbox())
    await core.sandboxes.create(rival, CreateSandbox())
    core.kill_switch.release(me.org_id)
    await core.sandboxes.create(me, CreateSandbox())


async def test_switches_in_the_store_are_picked_up_by_refresh(core: Core) -> None:
    me, rival = await principals(core)
    store = core.stored_switches.store
    await store.engage(rival.org_id, "abuse")
    assert not core.kill_switch.engaged(rival.org_id)  # not yet read
    await core.stored_switches.refresh()
    assert core.kill_switch.engaged(rival.org_id) and not core.kill_switch.engaged(me.org_id)
    await store.engage(GLOBAL)
    core.kill_switch.engage(me.org_id)  # this process's own switch
    await core.stored_switches.refresh()
    assert core.kill_switch.engaged() and core.kill_switch.engaged(me.org_id)
    await store.release(GLOBAL)
    await store.release(rival.org_id)
    await core.stored_switches.refresh()
    assert not core.kill_switch.engaged() and not core.kill_switch.engaged(rival.org_id)
    assert core.kill_switch.engaged(me.org_id)  # releasing the store's switches keeps it


@pytest.fixture
async def small_node(tmp_path: Path) -> AsyncIterator[Core]:
    """A node that may promise 5000 MiB of disk and 1100 MiB of memory: two default
    sandboxes (2048 MiB of disk, 512 of memory each)."""
    settings = Settings(
        data_dir=tmp_path,
        runtime="process",
        reaper_interval_s=3600,
        max_promised_disk_mb=5000,
        max_promised_memory_mb=1100,
    )
    c = await Core.open(settings, runtime=FakeRuntime(), templates=StaticTemplates())
    yield c
    for sb in await c.sandboxes.store.list_all(live_only=True):
        await c.runtime.destroy(sb.id)
    await c.close()


async def test_the_node_promises_no_more_disk_than_it_may_even_under_concurrent_creates(
    small_node: Core,
) -> None:
    me, rival = await principals(small_node)
    results = await asyncio.gather(
        *(small_node.sandboxes.create(me, CreateSandbox(memory_mb=64)) for _ in range(4)),
        return_exceptions=True,
    )  # memory to spare: only the disk binds
    made = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert 1 <= len(made) <= 2 and len(made) + len(refused) == 4  # never more (see the cap's test)
    assert all(isinstance(r, Conflict) and "max_promised_disk_mb" in r.message for r in refused), refused
    while len(made) < 2:
        made.append(await small_node.sandboxes.create(me, CreateSandbox(memory_mb=64)))
    with pytest.raises(Conflict, match="max_promised_disk_mb"):  # another org too: it is the node's
        await small_node.sandboxes.create(rival, CreateSandbox(disk_mb=1024))
    small = await small_node.sandboxes.create(rival, CreateSandbox(disk_mb=512, memory_mb=64))
    await small_node.sandboxes.kill(rival, small.id)
    await small_node.sandboxes.kill(me, made[0].id)
    await small_node.sandboxes.create(rival, CreateSandbox())


async def test_memory_is_promised_again_at_wake_restore_and_fork(small_node: Core) -> None:
    me, _ = await principals(small_node)
    first = await small_node.sandboxes.create(me, CreateSandbox(disk_mb=512))
    second = await small_node.sandboxes.create(me, CreateSandbox(disk_mb=512))
    with pytest.raises(Conflict, match="max_promised_memory_mb"):
        await small_node.sandboxes.create(me, CreateSandbox(disk_mb=512))
    checkpoint = await small_node.checkpoints.create(me, first.id, "cp")
    await ready(small_node, me, checkpoint)
    with pytest.raises(Conflict, match="max_promised_memory_mb"):
        await small_node.checkpoints.fork(me, checkpoint.id)
    await small_node.lifecycle.hibernate(me, first.id)  # its memory is free again, its disk is not
    third = await small_node.sandboxes.create(me, CreateSandbox(disk_mb=512))
    with pytest.raises(Conflict, match="max_promised_memory_mb"):
        await small_node.lifecycle.wake(me, first.id)
    with pytest.raises(Conflict, match="max_promised_memory_mb"):  # a restore wakes it too
        await small_node.checkpoints.restore(me, first.id, checkpoint.id)
    assert (await small_node.sandboxes.get(me, first.id)).status.value == "hibernated"
    await small_node.sandboxes.kill(me, third.id)
    await small_node.lifecycle.wake(me, first.id)
    await small_node.sandboxes.kill(me, second.id)
