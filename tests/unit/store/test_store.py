"""The SQL store on a real SQLite file: migrations, tenancy, updates."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.domain import EgressMode, EgressPolicy, Holdings, Limits, Sandbox, SandboxStatus
from corral.errors import Conflict, NotFound
from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.sandboxes import SqlSandboxStore


def sandbox(sid: str, org: str, status: SandboxStatus = SandboxStatus.RUNNING) -> Sandbox:
    now = datetime.now(UTC)
    return Sandbox(
        id=sid,
        org_id=org,
        template="base",
        status=status,
        limits=Limits(2, 256, 512, 64),
        envs={"A": "1"},
        metadata={"k": "v"},
        timeout_s=30,
        created_at=now,
        last_active_at=now,
        egress=EgressPolicy(EgressMode.DENY_ALL, ("10.0.0.0/8", "*.example.com"), ("evil.example.com",)),
    )


@pytest.fixture
async def db(tmp_path: Path) -> Database:
    d = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    keys = SqlKeyStore(d)
    await keys.add_org("org-aaaaaaaa", "a")
    await keys.add_org("org-bbbbbbbb", "b")
    yield d  # type: ignore[misc]
    await d.close()


async def test_round_trip_and_tenancy(db: Database) -> None:
    store = SqlSandboxStore(db)
    sb = sandbox("sb-11111111", "org-aaaaaaaa")
    await store.add(sb)
    got = await store.get("org-aaaaaaaa", "sb-11111111")
    assert got == sb
    with pytest.raises(NotFound):
        await store.get("org-bbbbbbbb", "sb-11111111")
    with pytest.raises(Conflict):
        await store.add(sb)
    assert [s.id for s in await store.list("org-bbbbbbbb")] == []


async def test_live_only_and_update(db: Database) -> None:
    store = SqlSandboxStore(db)
    await store.add(sandbox("sb-11111111", "org-aaaaaaaa"))
    await store.add(sandbox("sb-22222222", "org-aaaaaaaa", SandboxStatus.STOPPED))
    assert [s.id for s in await store.list("org-aaaaaaaa", live_only=True)] == ["sb-11111111"]
    assert len(await store.list_all()) == 2
    sb = await store.get("org-aaaaaaaa", "sb-11111111")
    await store.update(replace(sb, status=SandboxStatus.STOPPED, error="idle timeout"))
    assert (await store.get("org-aaaaaaaa", "sb-11111111")).error == "idle timeout"
    assert await store.list_all(live_only=True) == []


async def test_adding_an_id_twice_is_a_conflict(db: Database) -> None:
    store = SqlSandboxStore(db)
    await store.add(sandbox("sb-11111111", "org-aaaaaaaa"))
    with pytest.raises(Conflict, match="exists"):
        await store.add(sandbox("sb-11111111", "org-bbbbbbbb"))
    assert (await store.find("sb-11111111")).org_id == "org-aaaaaaaa"  # type: ignore[union-attr]


async def test_a_stale_write_cannot_bring_a_killed_sandbox_back(db: Database) -> None:
    store = SqlSandboxStore(db)
    await store.add(sandbox("sb-11111111", "org-aaaaaaaa"))
    stale = await store.get("org-aaaaaaaa", "sb-11111111")  # read before the kill
    await store.mark_stopped(stale.id, datetime.now(UTC), None)
    with pytest.raises(Conflict, match="is stopped"):
        await store.update(replace(stale, status=SandboxStatus.HIBERNATED))
    with pytest.raises(Conflict, match="is stopped"):
        await store.update(replace(stale, hold_until=datetime.now(UTC)))
    assert (await store.get("org-aaaaaaaa", stale.id)).status is SandboxStatus.STOPPED


async def test_touch_moves_last_active(db: Database) -> None:
    store = SqlSandboxStore(db)
    sb = sandbox("sb-11111111", "org-aaaaaaaa")
    await store.add(sb)
    other = sandbox("sb-22222222", "org-aaaaaaaa")
    await store.add(other)
    later = sb.last_active_at + timedelta(seconds=90)
    await store.touch({sb.id: later, "sb-99999999": later})  # a row gone meanwhile is skipped
    assert (await store.get("org-aaaaaaaa", sb.id)).last_active_at == later
    assert (await store.get("org-aaaaaaaa", other.id)).last_active_at == other.last_active_at
    await store.touch({})


async def test_holdings_count_an_orgs_live_sandboxes_and_sum_the_nodes_promises(db: Database) -> None:
    store = SqlSandboxStore(db)
    assert await store.holdings("org-aaaaaaaa") == Holdings(0, 0, 0)
    rows = [
        ("sb-11111111", "org-aaaaaaaa", SandboxStatus.RUNNING),
        ("sb-22222222", "org-aaaaaaaa", SandboxStatus.PAUSED),
        ("sb-33333333", "org-aaaaaaaa", SandboxStatus.HIBERNATED),  # its disk, not its memory
        ("sb-44444444", "org-aaaaaaaa", SandboxStatus.STOPPED),  # nothing
        ("sb-55555555", "org-bbbbbbbb", SandboxStatus.STARTING),
    ]
    for sid, org, status in rows:
        await store.add(sandbox(sid, org, status))
    # each holds 512 MiB of disk and 256 MiB of memory (``sandbox``'s limits)
    assert await store.holdings("org-aaaaaaaa") == Holdings(2, 4 * 512, 3 * 256)
    assert await store.holdings("org-bbbbbbbb") == Holdings(1, 4 * 512, 3 * 256)
    assert await store.holdings() == Holdings(0, 4 * 512, 3 * 256)


async def test_set_status_changes_only_the_status_it_was_told(db: Database) -> None:
    store = SqlSandboxStore(db)
    sb = sandbox("sb-11111111", "org-aaaaaaaa", SandboxStatus.PAUSED)
    await store.add(sb)
    assert (await store.holdings("org-aaaaaaaa")).org_live == 1  # a paused sandbox holds its memory
    later = sb.last_active_at + timedelta(seconds=5)
    assert await store.set_status(sb.id, SandboxStatus.PAUSED, SandboxStatus.RUNNING, later)
    assert not await store.set_status(sb.id, SandboxStatus.PAUSED, SandboxStatus.RUNNING, later)
    found = await store.get("org-aaaaaaaa", sb.id)
    assert (found.status, found.last_active_at) == (SandboxStatus.RUNNING, later)
    assert replace(found, status=sb.status, last_active_at=sb.last_active_at) == sb  # the rest as it was


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    first = await Database.open(url)
    await SqlKeyStore(first).add_org("org-cccccccc", "c")
    await first.close()
    again = await Database.open(url)
    assert (await SqlKeyStore(again).org_by_name("c")).id == "org-cccccccc"
    await again.close()
