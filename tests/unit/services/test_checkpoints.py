"""Checkpoints, forks and restores on the in-memory runtime (a sandbox's "disk" is its
files), and patches (bash scripts) on the process runtime, over SQLite."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import Checkpoint, CheckpointStatus, SandboxStatus
from corral.errors import Conflict, InvalidInput, NotFound
from corral.runtime.memory import SNAPSHOT
from corral.services.sandboxes import CreateSandbox
from tests.unit.services.conftest import ls, owner, read, ready, sh, write


async def test_create_is_processing_then_ready_with_versioned_metadata(core: Core, tmp_path: Path) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox(envs={"A": "1"}))
    await write(core, me, sb.id, "f.txt", "one\n")
    made = await core.checkpoints.create(me, sb.id, "first")
    assert made.status is CheckpointStatus.PROCESSING and made.id.startswith("cp-")
    done = await ready(core, me, made)
    assert done.status is CheckpointStatus.READY and done.size_bytes > 0
    meta = json.loads((tmp_path / "checkpoints" / made.id / "checkpoint.json").read_text())
    assert meta["format"] == 1 and meta["layers"]["memory"] is None
    assert meta["config"]["envs"] == {"A": "1"} and meta["sandboxId"] == sb.id
    assert sorted(p.name for p in (tmp_path / "checkpoints" / made.id).iterdir()) == [
        "checkpoint.json",
        SNAPSHOT,  # the snapshotter's copy of the disk, moved in with it
    ]


@pytest.mark.parametrize("name", ["", "x" * 129, "tab\there"])
async def test_bad_names_are_invalid_naming_the_field(core: Core, name: str) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    with pytest.raises(InvalidInput) as err:
        await core.checkpoints.create(me, sb.id, name)
    assert err.value.field == "name"


async def test_duplicate_name_conflicts_and_ten_is_the_most(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    made = [await core.checkpoints.create(me, sb.id, f"cp{i}") for i in range(10)]
    with pytest.raises(Conflict) as err:
        await core.checkpoints.create(me, sb.id, "cp3")
    assert err.value.field == "name"
    with pytest.raises(Conflict, match="delete one first"):
        await core.checkpoints.create(me, sb.id, "eleventh")
    await core.checkpoints.delete(me, sb.id, made[0].id)
    assert (await core.checkpoints.create(me, sb.id, "eleventh")).name == "eleventh"
    with pytest.raises(NotFound):
        await core.checkpoints.delete(me, sb.id, made[0].id)


async def test_fork_has_the_checkpoint_files_and_never_sees_later_writes(core: Core) -> None:
    me = await owner(core)
    parent = await core.sandboxes.create(me, CreateSandbox(envs={"A": "1", "B": "2"}))
    await write(core, me, parent.id, "shared.txt", "before\n")
    checkpoint = await core.checkpoints.create(me, parent.id, "snap")
    await write(core, me, parent.id, "shared.txt", "after\n")
    await write(core, me, parent.id, "parent-only.txt", "new\n")
    fork = await core.checkpoints.fork(me, checkpoint.id, envs={"B": "3"}, timeout_s=0)
    assert fork.status is SandboxStatus.RUNNING and fork.checkpoint_id == checkpoint.id
    assert fork.envs == {"A": "1", "B": "3"} and fork.timeout_s == 0
    assert await read(core, me, fork.id, "shared.txt") == "before\n"
    assert await ls(core, me, fork.id) == ["shared.txt"]
    await write(core, me, fork.id, "shared.txt", "fork\n")
    assert await read(core, me, parent.id, "shared.txt") == "after\n"
    again = await core.checkpoints.fork(me, checkpoint.id)
    assert await read(core, me, again.id, "shared.txt") == "before\n"


async def test_a_fork_that_read_the_checkpoint_while_its_saving_ended_still_forks(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint row is read ``processing``, and its saving ends (the row updated,
    the task gone) before the fork looks for the task: the fork reads the outcome."""
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await write(core, me, sb.id, "f", "kept\n")
    checkpoint = await core.checkpoints.create(me, sb.id, "snap")
    store = core.checkpoints.store
    get = store.get
    seen = []

    async def get_then_let_the_saving_end(org_id: str, checkpoint_id: str) -> Checkpoint:
        found = await get(org_id, checkpoint_id)
        seen.append(found.status)
        task = core.checkpoints._persisting.get(checkpoint_id)
        if task is not None:
            await task
            await asyncio.sleep(0)  # its done callback takes it out of _persisting
        return found

    monkeypatch.setattr(store, "get", get_then_let_the_saving_end)
    fork = await core.checkpoints.fork(me, checkpoint.id, timeout_s=0)
    assert seen[0] is CheckpointStatus.PROCESSING and CheckpointStatus.READY in seen
    assert await read(core, me, fork.id, "f") == "kept\n"


async def test_restore_reverts_files_in_place_and_runs_it(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await write(core, me, sb.id, "f", "v1\n")
    await write(core, me, sb.id, "g", "keep\n")
    checkpoint = await core.checkpoints.create(me, sb.id, "v1")
    await write(core, me, sb.id, "f", "v2\n")
    await core.files.remove(me, sb.id, "g")
    await write(core, me, sb.id, "h", "extra\n")
    restored = await core.checkpoints.restore(me, sb.id, checkpoint.id)  # running: stopped first
    assert restored.status is SandboxStatus.RUNNING
    assert [await read(core, me, sb.id, name) for name in ("f", "g")] == ["v1\n", "keep\n"]
    assert await ls(core, me, sb.id) == ["f", "g"]
    await write(core, me, sb.id, "f", "v3\n")
    await core.lifecycle.hibernate(me, sb.id)
    assert (await core.checkpoints.restore(me, sb.id, checkpoint.id)).status is SandboxStatus.RUNNING
    assert await read(core, me, sb.id, "f") == "v1\n"  # and a hibernated one is woken on it


async def test_patches_run_in_sequence_order_and_numbers_are_never_reused(process_core: Core) -> None:
    core = process_core
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    checkpoint = await core.checkpoints.create(me, sb.id, "base")
    first = await core.patches.create(me, checkpoint.id, "echo one >> log", "first")
    second = await core.patches.create(me, checkpoint.id, "echo two >> log")
    await core.patches.delete(me, checkpoint.id, second.id)
    third = await core.patches.create(me, checkpoint.id, "echo three >> log")
    assert [p.sequence for p in await core.patches.list(me, checkpoint.id)] == [1, 3]
    assert (first.strategy, third.sequence) == ("on_wake", 3)
    fork = await core.checkpoints.fork(me, checkpoint.id)
    assert await sh(core, me, fork.id, "cat log") == "one\nthree\n"
    assert [(r.sequence, r.status) for r in fork.patches] == [(1, "applied"), (3, "applied")]
    assert fork.error is None
    restored = await core.checkpoints.restore(me, sb.id, checkpoint.id)
    assert restored.patches == () and "log" not in await sh(core, me, sb.id, "ls")  # restore runs none


async def test_a_failing_patch_is_reported_on_the_sandbox_and_in_the_audit_trail(
    process_core: Core,
) -> None:
    core = process_core
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    checkpoint = await ready(core, me, await core.checkpoints.create(me, sb.id, "base"))  # a fork needs it
    await core.patches.create(me, checkpoint.id, "echo ok >> log")
    bad = await core.patches.create(me, checkpoint.id, "echo broken >&2; exit 3")
    await core.patches.create(me, checkpoint.id, "echo never >> log")
    fork = await core.checkpoints.fork(me, checkpoint.id)
    assert fork.status is SandboxStatus.RUNNING
    assert [r.status for r in fork.patches] == ["applied", "failed", "skipped"]
    assert fork.patches[1].exit_code == 3 and fork.patches[1].error == "broken"
    assert fork.error is not None and bad.id in fork.error and "exit code 3" in fork.error
    assert (await core.sandboxes.get(me, fork.id)).error == fork.error  # stored
    assert await sh(core, me, fork.id, "cat log") == "ok\n"
    await core.audit.flush()
    trail = await core.audit.sandbox_trail(me, fork.id)
    assert "sandbox_patch_failed" in [e.kind for e in trail.events]


async def test_bad_patches_and_other_orgs_checkpoints(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    checkpoint = await core.checkpoints.create(me, sb.id, "base")
    with pytest.raises(InvalidInput) as err:
        await core.patches.create(me, checkpoint.id, "   ")
    assert err.value.field == "script"
    stranger = Principal(org_id="org-zzzzzzzz", role=Role.OWNER)
    with pytest.raises(NotFound):
        await core.checkpoints.fork(stranger, checkpoint.id)
    with pytest.raises(NotFound):
        await core.patches.list(stranger, checkpoint.id)
    with pytest.raises(NotFound):
        await core.patches.delete(me, checkpoint.id, "pa-0000000000000000")
    other = await core.sandboxes.create(me, CreateSandbox())
    with pytest.raises(NotFound):  # not this sandbox's checkpoint
        await core.checkpoints.restore(me, other.id, checkpoint.id)


async def test_recover_fails_interrupted_checkpoints_and_removes_their_files(
    core: Core, tmp_path: Path
) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    good = await ready(core, me, await core.checkpoints.create(me, sb.id, "good"))
    interrupted = Checkpoint(
        id="cp-interrupted0000",
        org_id=sb.org_id,
        sandbox_id=sb.id,
        name="half",
        status=CheckpointStatus.PROCESSING,
        config=good.config,
        created_at=datetime.now(UTC),
    )
    await core.checkpoints.store.add(interrupted)
    staging = tmp_path / "checkpoints" / f".staging-{interrupted.id}"
    staging.mkdir()
    (staging / "partial").write_text("x")
    stray = tmp_path / "checkpoints" / "cp-nobodyowns00000"
    stray.mkdir()
    assert await core.checkpoints.recover() == [interrupted.id]
    found = {c.id: c for c in await core.checkpoints.list(me, sb.id)}
    assert found[interrupted.id].status is CheckpointStatus.FAILED
    assert found[good.id].status is CheckpointStatus.READY
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.id]
    with pytest.raises(Conflict):  # a failed checkpoint cannot be forked
        await core.checkpoints.fork(me, interrupted.id)
    assert (await core.checkpoints.create(me, sb.id, "half")).name == "half"  # failed name reused
