"""The audit trail as the services write it: what is recorded, by whom, and that
nothing queued is lost on a clean shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

import corral.services.audit as audit_module
from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import Event, ExecRequest, SessionSpec
from corral.errors import Forbidden, NotFound
from corral.metrics import Metrics
from corral.runtime.memory import FakeRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.audit import AuditService
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from corral.store.events import SqlEventStore
from tests.support.conditions import eventually_async


async def open_core(data_dir: Path) -> Core:
    settings = Settings(data_dir=data_dir, runtime="process", reaper_interval_s=3600)
    return await Core.open(settings, runtime=FakeRuntime(), templates=StaticTemplates())


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    c = await open_core(tmp_path)
    yield c
    for sb in await c.sandboxes.store.list_all(live_only=True):
        await c.runtime.destroy(sb.id)
    await c.close()


async def owner(core: Core) -> Principal:
    assert core.bootstrap_key
    return replace(await core.auth.authenticate_key(core.bootstrap_key), client_id="agent-7")


async def kinds_of(core: Core, principal: Principal, sandbox_id: str) -> list[tuple[str, dict[str, object]]]:
    page = await core.audit.sandbox_trail(principal, sandbox_id, newest=False)
    for e in page.events:
        assert (e.org_id, e.key_id, e.client_id) == (principal.org_id, principal.key_id, "agent-7")
    return [(e.kind, e.data) for e in page.events]


async def test_the_services_record_who_did_what(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await core.commands.run(me, sb.id, ExecRequest("exit", ("3",)))

    async def body() -> AsyncIterator[bytes]:
        yield b"hello"

    await core.files.write(me, sb.id, "/tmp/a.txt", body())
    await core.files.remove(me, sb.id, "/tmp/a.txt")
    await core.sandboxes.kill(me, sb.id)
    recorded = await kinds_of(core, me, sb.id)
    assert [k for k, _ in recorded] == [
        "sandbox_created", "exec_started", "exec_ended", "file_written", "file_removed", "sandbox_killed",
    ]  # fmt: skip
    assert recorded[1][1]["command"] == "exit 3"
    assert recorded[2][1]["exit_code"] == 3
    assert recorded[3][1] == {"path": "/tmp/a.txt", "bytes": 5}
    assert recorded[4][1] == {"path": "/tmp/a.txt"}


async def test_exec_sessions_and_run_async_record_their_end(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    info = await core.commands.start_session(me, sb.id, SessionSpec("exit", ("7",)))
    exec_id = await core.commands.run_async(me, sb.id, ExecRequest("exit", ("4",)))

    async def ended() -> dict[object, object]:
        return {d["exec"]: d["exit_code"] for k, d in await kinds_of(core, me, sb.id) if k == "exec_ended"}

    async def both_ended() -> bool:
        return len(await ended()) == 2

    await eventually_async(both_ended, 10, "the two ends were not recorded")  # followed in the background
    assert await ended() == {info.id: 7, exec_id: 4}


async def test_reads_need_audit_read_and_hide_other_orgs(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    with pytest.raises(Forbidden):
        await core.audit.sandbox_trail(replace(me, role=Role.DEVELOPER), sb.id)
    stranger = Principal(org_id="org-zzzzzzzz", role=Role.OWNER)
    for sandbox_id in (sb.id, "sb-doesnotexist0000", "../etc"):
        with pytest.raises(NotFound):
            await core.audit.sandbox_trail(stranger, sandbox_id)
    assert (await core.audit.org_trail(stranger)).events == []
    worker = replace(me, sandbox_id="sb-other0000000000")
    with pytest.raises(Forbidden):  # a worker token holds its sandbox's worker scopes only
        await core.audit.org_trail(worker)
    assert [e.kind for e in (await core.audit.org_trail(me)).events] == ["sandbox_created"]


async def test_egress_denials_are_recorded_under_the_sandboxes_org(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await core.audit.egress_denied(sb.id, {"dst": "198.18.0.6", "port": 80, "reason": "policy"})
    await core.audit.egress_denied("sb-unknown00000000", {"dst": "10.0.0.1"})  # dropped, not raised
    page = await core.audit.org_trail(me, kinds=["egress_denied"])
    assert [(e.sandbox_id, e.key_id, e.data["dst"]) for e in page.events] == [(sb.id, None, "198.18.0.6")]


async def test_a_clean_shutdown_writes_every_queued_record(tmp_path: Path) -> None:
    core = await open_core(tmp_path)
    org = (await core.auth.keys.org_by_name("default")).id
    for n in range(2000):
        await core.audit.record("exec_started", org_id=org, data={"n": n})
    await core.close()
    core = await open_core(tmp_path)
    try:
        store = core.audit.store
        seen, cursor = [], None
        while True:
            page = await store.page(org, limit=500, cursor=cursor, newest=False)
            seen += [e.data["n"] for e in page.events]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == list(range(2000))
    finally:
        await core.close()


class SlowStore(SqlEventStore):
    """Holds every write until ``release`` is set; fails the first ``failures`` writes."""

    def __init__(self, failures: int = 0) -> None:
        self.release = asyncio.Event()
        self.written: list[Event] = []
        self.failures = failures

    async def append(self, events: Sequence[Event]) -> None:
        await self.release.wait()
        if self.failures:
            self.failures -= 1
            raise OSError("disk on fire")
        self.written += events


async def test_a_full_queue_makes_record_wait_rather_than_drop(core: Core) -> None:
    store = SlowStore()
    audit = AuditService(store, core.sandboxes.store, Metrics(), queue_size=3, batch_size=1, linger_s=0)
    audit.start()
    for n in range(4):  # one held by the writer, three queued
        await audit.record("k", org_id="o", data={"n": n})
    blocked = asyncio.create_task(audit.record("k", org_id="o", data={"n": 4}))
    for _ in range(5):  # turns of the loop: a record with room in the queue is done by now
        await asyncio.sleep(0)
    assert not blocked.done()
    store.release.set()
    await blocked
    await audit.close()
    assert [e.data["n"] for e in store.written] == [0, 1, 2, 3, 4]


async def test_a_refused_batch_is_retried(core: Core, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "RETRIES", (0.0, 0.0, 0.0))
    store = SlowStore(failures=2)
    store.release.set()
    metrics = Metrics()
    audit = AuditService(store, core.sandboxes.store, metrics, linger_s=0)
    audit.start()
    await audit.record("k", org_id="o")
    await audit.close()
    assert [e.kind for e in store.written] == ["k"]
    assert metrics.audit_records.labels("written")._value.get() == 1
