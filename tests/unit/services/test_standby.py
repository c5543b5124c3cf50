"""Sandboxes started ahead: which creates take one (any limits, changed in place),
refills, a dead one skipped, how many of each template by demand within the budget, and
nothing left at shutdown (on the in-memory runtime)."""

from __future__ import annotations

from pathlib import Path

from corral.core import Core
from corral.domain import Capacity, EgressMode, EgressPolicy, ExecRequest, Limits
from corral.runtime.memory import FakeRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.services.sandboxes import CreateSandbox
from corral.services.standby import Standby
from tests.support.clock import FakeClock
from tests.support.conditions import eventually_async
from tests.unit.services.conftest import close_core, open_core, owner


async def filled(standby: Standby, count: int) -> None:
    """Once the background refill has ``count`` standing by of each template."""
    await eventually_async(
        lambda: standby.ready == count * len(standby.names),
        10,
        f"{standby.ready} standing by, not {count} each",
    )


async def env(core: Core, sandbox_id: str, **envs: str) -> str:
    me = await owner(core)
    return (await core.commands.run(me, sandbox_id, ExecRequest("env", envs=envs))).stdout.decode()


def standing_by(standby: Standby, template: str = "base") -> list[str]:
    return [entry.id for entry in standby._ready[template]]


async def test_a_default_create_takes_a_started_sandbox_and_it_is_replaced(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    core: Core = await open_core(tmp_path, runtime=runtime, standby_sandboxes=2)
    try:
        standby = core.sandboxes.standby
        assert standby is not None
        await filled(standby, 2)
        assert standby.names == ("base", "nodejs")  # the default template and the sessions' node one
        assert f"\ncorral_sandboxes_standby {2 * len(standby.names)}.0\n".encode() in core.metrics.render()
        ahead = standing_by(standby)
        me = await owner(core)
        sandbox = await core.sandboxes.create(me, CreateSandbox(metadata={"k": "v"}, timeout_s=60))
        assert sandbox.id == ahead[0]
        assert (await core.sandboxes.get(me, sandbox.id)).metadata == {"k": "v"}
        assert (await core.commands.run(me, sandbox.id, ExecRequest("echo", ("42",)))).stdout == b"42\n"
        await filled(standby, 2)
        assert sandbox.id not in standing_by(standby)

        # envs are given to the agent of the one taken: later commands get them, and a
        # command's own envs still win
        await filled(standby, 2)
        nxt = standing_by(standby)[0]
        with_envs = await core.sandboxes.create(me, CreateSandbox(envs={"A": "1", "B": "2"}))
        assert with_envs.id == nxt
        assert "A=1\nB=2\n" in await env(core, with_envs.id)
        assert "A=x\nB=2\n" in await env(core, with_envs.id, A="x")

        # another egress policy is applied to the one taken before it is handed out
        await filled(standby, 2)
        nxt = standing_by(standby)[0]
        deny = EgressPolicy(EgressMode.DENY_ALL, audit_allowed=True)
        denied = await core.sandboxes.create(me, CreateSandbox(egress=deny))
        assert denied.id == nxt and runtime.sandboxes[nxt].egress == deny

        # other limits are given to the one taken, in place
        await filled(standby, 2)
        for req in [CreateSandbox(memory_mb=256, cpu_count=2, disk_mb=1024), CreateSandbox(cpu_seconds=5.0)]:
            nxt = standing_by(standby)[0]
            made = await core.sandboxes.create(me, req)
            spec = runtime.sandboxes[nxt].spec
            assert made.id == nxt and spec is not None and spec.limits == made.limits
            assert spec.disk_room_mb == core.settings.default_disk_mb  # a smaller diskMB fits
            await filled(standby, 2)
        assert b'corral_standby_claims_total{result="hit"} 5.0' in core.metrics.render()
        left = [entry.id for ready in standby._ready.values() for entry in ready]
        assert left and all(sid in runtime.sandboxes for sid in left)
    finally:
        await close_core(core)
    # shutdown removed the ones standing by
    assert not any(sid in runtime.sandboxes for sid in left)


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
        assert (await core.commands.run(me, sandbox.id, ExecRequest("true"))).exit_code == 0
    finally:
        await close_core(core)


async def test_none_by_default_but_on_runc(tmp_path: Path) -> None:
    core = await open_core(tmp_path)
    try:
        assert core.sandboxes.standby is None
    finally:
        await close_core(core)


async def test_each_template_stands_by_and_one_not_built_is_left_alone() -> None:
    runtime = FakeRuntime()
    limits = Limits(1, 512, 2048, 512)
    templates = StaticTemplates(("base", "nodejs"))
    standby = Standby(runtime, templates, "base", limits, 4, also=("nodejs", "python"), room_mb=4096)
    standby.start()
    try:
        await eventually_async(lambda: standby.ready == 4, 10, f"{standby.ready} standing by, not 4")
        assert standing_by(standby, "python") == []  # not built: never built from here
        node = standing_by(standby, "nodejs")
        taken = await standby.take(await templates.get("nodejs"), limits, {}, EgressPolicy())
        assert taken == node[0]
        spec = runtime.sandboxes[taken].spec
        assert spec is not None and spec.template.name == "nodejs"
        # another template, or a disk larger than theirs, take none
        assert await standby.take(await StaticTemplates().get("python"), limits, {}, EgressPolicy()) is None
        bigger = Limits(1, 512, 8192, 512)
        assert await standby.take(await templates.get("base"), bigger, {}, EgressPolicy()) is None
        await eventually_async(lambda: standby.ready == 4, 10, "not refilled")
        left = [entry.id for ready in standby._ready.values() for entry in ready]
    finally:
        await standby.close()
    assert left and not any(sid in runtime.sandboxes for sid in left)


async def test_templates_stand_by_as_their_demand_earns_within_the_budget() -> None:
    runtime, clock = FakeRuntime(), FakeClock()
    limits = Limits(1, 512, 2048, 512)
    templates = StaticTemplates(("base", "nodejs", "python", "go"))
    standby = Standby(runtime, templates, "base", limits, 6, also=("nodejs",), window_s=60, clock=clock)
    built = ("base", "nodejs", "python", "go")
    # no demand: the budget shared by the default template and the ``also`` ones
    assert standby.targets(built) == {"base": 3, "nodejs": 3}
    standby.start()
    try:
        await eventually_async(lambda: counts(standby) == {"base": 3, "nodejs": 3}, 10, "not filled")
        python = await templates.get("python")
        for _ in range(4):  # creates of a template not standing by: none taken, demand counted
            assert await standby.take(python, limits, {}, EgressPolicy()) is None
        assert standby.targets(built) == {"base": 2, "nodejs": 1, "python": 3}
        await eventually_async(
            lambda: counts(standby) == {"base": 2, "nodejs": 1, "python": 3}, 10, f"{counts(standby)}"
        )
        assert len(runtime.sandboxes) == 6  # the surplus removed: never more than the budget
        taken = await standby.take(python, limits, {}, EgressPolicy())
        assert taken is not None and runtime.sandboxes[taken].spec.template.name == "python"  # type: ignore[union-attr]

        # more templates in use than the budget: the most demanded stand by
        small = Standby(runtime, templates, "base", limits, 2, also=("nodejs",), clock=clock)
        for name, times in (("go", 3), ("python", 2)):
            for _ in range(times):
                small._note(name)
        assert small.targets(built) == {"base": 0, "nodejs": 0, "go": 1, "python": 1}

        # the demand ages out of the window: back to the default and ``also`` templates
        clock.advance(61)
        assert standby.targets(built) == {"base": 3, "nodejs": 3}
        standby._wanted.set()
        await eventually_async(lambda: counts(standby) == {"base": 3, "nodejs": 3}, 10, f"{counts(standby)}")
        assert len(runtime.sandboxes) == 6 + 1  # the budget's and the one taken
    finally:
        await standby.close()
    assert len(runtime.sandboxes) == 1


async def test_a_template_released_has_none_standing_by_and_no_demand() -> None:
    """A template being deleted: its standbys removed (their roots unmounted) and its
    demand forgotten, so none is started for it again until creates ask."""
    runtime = FakeRuntime()
    limits = Limits(1, 512, 2048, 512)
    templates = StaticTemplates(("base", "python"))
    standby = Standby(runtime, templates, "base", limits, 4, window_s=60, clock=FakeClock())
    standby.start()
    try:
        python = await templates.get("python")
        for _ in range(3):
            assert await standby.take(python, limits, {}, EgressPolicy()) is None
        await eventually_async(lambda: counts(standby).get("python", 0) > 0, 10, f"{counts(standby)}")
        gone = standing_by(standby, "python")
        await standby.release("python")
        assert "python" not in counts(standby)
        assert not set(gone) & set(runtime.sandboxes)
        assert standby.targets(("base", "python")) == {"base": 4}
    finally:
        await standby.close()


def counts(standby: Standby) -> dict[str, int]:
    return {name: len(ready) for name, ready in standby._ready.items() if ready}


async def test_the_memory_budget_sets_how_many_stand_by_and_what_the_node_promises(tmp_path: Path) -> None:
    runtime = FakeRuntime()
    core = await open_core(tmp_path, runtime=runtime, standby_memory_mb=1800, default_memory_mb=512)
    try:
        standby = core.sandboxes.standby
        assert standby is not None and standby.budget == 3  # 1800 // 512
        assert core.sandboxes.admission.standing == Capacity(3 * 2048, 3 * 512)
        await eventually_async(lambda: standby.ready == 3, 10, f"{standby.ready} standing by, not 3")
        assert len(runtime.sandboxes) == 3
    finally:
        await close_core(core)
    none = await open_core(tmp_path / "none", standby_memory_mb=500, standby_sandboxes=2)
    try:
        assert none.sandboxes.standby is None  # less than one sandbox's memory
    finally:
        await close_core(none)
