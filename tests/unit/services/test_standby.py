"""Sandboxes started ahead: which creates take one, refills, a dead one skipped, and
nothing left at shutdown (the process runtime: the real agent, no isolation)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from corral.core import Core
from corral.domain import EgressMode, EgressPolicy, ExecRequest
from corral.services.sandboxes import CreateSandbox
from corral.services.standby import Standby
from tests.unit.services.conftest import close_core, open_core, owner, sh


async def filled(standby: Standby, count: int) -> None:
    for _ in range(500):
        if standby.ready == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{standby.ready} standing by, not {count}")


def standing_by(standby: Standby) -> list[str]:
    return [entry.id for entry in standby._ready]


async def test_a_default_create_takes_a_started_sandbox_and_it_is_replaced(tmp_path: Path) -> None:
    core: Core = await open_core(tmp_path, standby_sandboxes=2)
    try:
        standby = core.sandboxes.standby
        assert standby is not None
        await filled(standby, 2)
        assert b"\ncorral_sandboxes_standby 2.0\n" in core.metrics.render()
        ahead = standing_by(standby)
        me = await owner(core)
        sandbox = await core.sandboxes.create(me, CreateSandbox(metadata={"k": "v"}, timeout_s=60))
        assert sandbox.id == ahead[0]
        assert (await core.sandboxes.get(me, sandbox.id)).metadata == {"k": "v"}
        assert await sh(core, me, sandbox.id, "echo $((6 * 7))") == "42\n"
        await filled(standby, 2)
        assert sandbox.id not in standing_by(standby)

        # envs are given to the agent of the one taken: later commands get them, and a
        # command's own envs still win
        await filled(standby, 2)
        nxt = standing_by(standby)[0]
        with_envs = await core.sandboxes.create(me, CreateSandbox(envs={"A": "1", "B": "2"}))
        assert with_envs.id == nxt
        assert await sh(core, me, with_envs.id, "echo $A$B") == "12\n"
        result = await core.commands.run(
            me, with_envs.id, ExecRequest("sh", ("-c", "echo $A"), envs={"A": "x"})
        )
        assert result.stdout == b"x\n"

        # what a started sandbox cannot take afterwards starts one as before
        await filled(standby, 2)
        taken = set(standing_by(standby))
        for req in [CreateSandbox(memory_mb=256), CreateSandbox(egress=EgressPolicy(EgressMode.DENY_ALL))]:
            made = await core.sandboxes.create(me, req)
            assert made.id not in taken
        left = standing_by(standby)
        assert left and all((tmp_path / "run" / sid).exists() for sid in left)
    finally:
        await close_core(core)
    # shutdown removed the ones standing by
    assert not any((tmp_path / "run" / sid).exists() for sid in left)


async def test_a_started_sandbox_that_died_is_not_handed_out(tmp_path: Path) -> None:
    core = await open_core(tmp_path, standby_sandboxes=1)
    try:
        standby = core.sandboxes.standby
        assert standby is not None
        await filled(standby, 1)
        [dead] = standing_by(standby)
        await core.runtime.destroy(dead)  # its agent is gone
        me = await owner(core)
        sandbox = await core.sandboxes.create(me, CreateSandbox())
        assert sandbox.id != dead
        assert await sh(core, me, sandbox.id, "echo ok") == "ok\n"
    finally:
        await close_core(core)


async def test_none_by_default_on_the_process_runtime(tmp_path: Path) -> None:
    core = await open_core(tmp_path)
    try:
        assert core.sandboxes.standby is None
    finally:
        await close_core(core)
