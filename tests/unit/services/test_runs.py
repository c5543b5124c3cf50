"""The run service (services/runs.py) on the in-memory runtime (its desktop's commands
are programs that answer, a screenshot a PNG) and the in-memory thread store, with a
scripted model: a run's frames in order, runs of a thread one at a time and the second
reusing the desktop, a model without a key failing the run with its message, and
reconcile ending what a crash left."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import ExecRequest, ExecResult
from corral.domain.runs import ActionStatus, Author, DesktopStatus, Message, Run, RunStatus
from corral.errors import ModelUnavailable
from corral.runtime.memory import FakeRuntime, FakeSandbox
from corral.runtime.static_templates import StaticTemplates
from corral.services.computer_use import ComputerUseAgent
from corral.services.runs import NewThread, RunService
from corral.settings import Settings
from tests.support.threads import MemoryThreadStore
from tests.unit.services.conftest import close_core, owner

PNG = b"\x89PNG\r\n\x1a\nfake"


def answers(request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
    return ExecResult(0, PNG if request.cmd == "python3" else b"", b"")


@dataclass
class Model:
    """Answers a screenshot, then ends its turn; ``hold`` keeps each call waiting."""

    hold: asyncio.Event | None = None
    configured: bool = True
    unavailable: bool = False
    bodies: list[dict[str, object]] = field(default_factory=list)

    async def messages(
        self, org_id: str, body: dict[str, object], *, sandbox_id: str | None = None
    ) -> dict[str, object]:
        if self.unavailable:
            raise ModelUnavailable()
        if self.hold is not None:
            await self.hold.wait()
        self.bodies.append(body)
        if isinstance(body["messages"][-1]["content"], str):  # type: ignore[index]  # a prompt: act
            use = {"type": "tool_use", "id": "toolu_1", "name": "computer", "input": {"action": "screenshot"}}
            return {"content": [use], "stop_reason": "tool_use"}
        return {"content": [{"type": "text", "text": "done"}], "stop_reason": "end_turn"}


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[Core]:
    runtime = FakeRuntime({"/bin/bash": answers, "python3": answers, "xdotool": answers})
    settings = Settings(data_dir=tmp_path, port=8080, runtime="process", reaper_interval_s=3600)
    c = await Core.open(settings, runtime=runtime, templates=StaticTemplates(("base", "gui")))
    yield c
    await close_core(c)


def service(
    core: Core, model: Model, store: MemoryThreadStore | None = None, deadline_s: float = 60
) -> RunService:
    agent = ComputerUseAgent(model, model_name="claude-test", max_steps=5)
    return RunService(
        store or MemoryThreadStore(),
        core.sandboxes,
        core.desktop,
        agent,
        core.audit,
        run_deadline_s=deadline_s,
    )


async def frames(runs: RunService, me: Principal, run: Run) -> list[tuple[str, dict[str, Any]]]:
    return [(f.kind, dict(f.data)) async for f in await runs.events(me, run.thread_id, run.id)]


async def test_a_run_provisions_a_desktop_acts_and_completes(core: Core) -> None:
    me, runs = await owner(core), service(core, Model())
    thread, _ = await runs.create_thread(me, NewThread("open a terminal", "open a terminal"))
    started = await runs.start_run(me, thread.id, "go")
    seen = await frames(runs, me, started.run)
    kinds = [kind for kind, _ in seen]
    assert kinds == [
        "status",
        "status",
        "desktop",
        "desktop",
        "action",
        "action",
        "assistant",
        "status",
        "done",
    ]
    assert [d["status"] for k, d in seen if k == "status"] == ["QUEUED", "RUNNING", "COMPLETED"]
    assert [d["sandboxStatus"] for k, d in seen if k == "desktop"] == ["initializing", "ready"]
    done = await runs.run(me, thread.id, started.run.id)
    assert done.status is RunStatus.COMPLETED and done.steps == 2 and done.desktop.sandbox_id
    sandbox = await core.sandboxes.get(me, done.desktop.sandbox_id)
    assert sandbox.template == "gui" and sandbox.deadline_at is not None  # the desktop's 15 minutes
    _, messages = await runs.thread(me, thread.id)
    assert [(m.role, m.status) for m in messages] == [
        (Author.USER, None),
        (Author.USER, None),
        (Author.ACTION, ActionStatus.DONE),
        (Author.ASSISTANT, None),
    ]


async def test_runs_of_a_thread_take_turns_and_the_second_reuses_the_desktop(core: Core) -> None:
    hold = asyncio.Event()
    me, runs = await owner(core), service(core, Model(hold=hold))
    thread, _ = await runs.create_thread(me, NewThread("x", "x"))
    first = await runs.start_run(me, thread.id, "one")
    second = await runs.start_run(me, thread.id, "two")
    assert (await runs.run(me, thread.id, second.run.id)).status is RunStatus.QUEUED
    hold.set()
    await frames(runs, me, second.run)
    one, two = [await runs.run(me, thread.id, r.run.id) for r in (first, second)]
    assert (one.status, two.status) == (RunStatus.COMPLETED, RunStatus.COMPLETED)
    assert two.desktop.sandbox_id == one.desktop.sandbox_id and two.desktop.status is DesktopStatus.RESTORED


async def test_a_model_without_a_key_fails_the_run_saying_what_to_set(core: Core) -> None:
    model = Model()
    me, runs = await owner(core), service(core, model)
    thread, _ = await runs.create_thread(me, NewThread("x", "x"))
    model.unavailable = True
    started = await runs.start_run(me, thread.id, "go")
    await frames(runs, me, started.run)
    done = await runs.run(me, thread.id, started.run.id)
    assert done.status is RunStatus.FAILED and "CORRAL_ANTHROPIC_API_KEY" in (done.error or "")
    model.configured = False
    with pytest.raises(ModelUnavailable):
        await runs.start_run(me, thread.id, "again")


async def test_a_run_past_its_deadline_fails_saying_so(core: Core) -> None:
    me, runs = (
        await owner(core),
        service(core, Model(hold=asyncio.Event()), deadline_s=0.2),
    )  # a model that never answers
    thread, _ = await runs.create_thread(me, NewThread("x", "x"))
    started = await runs.start_run(me, thread.id, "go")
    await frames(runs, me, started.run)
    done = await runs.run(me, thread.id, started.run.id)
    assert done.status is RunStatus.FAILED and done.error == "the run's deadline passed (0.2 s)"


async def test_reconcile_ends_the_runs_a_crash_left(core: Core) -> None:
    store = MemoryThreadStore()
    me, runs = await owner(core), service(core, Model(hold=asyncio.Event()), store)
    thread, _ = await runs.create_thread(me, NewThread("x", "x"))
    started = await runs.start_run(me, thread.id, "go")
    acting = Message(
        "a-1",
        thread.id,
        Author.ACTION,
        "click",
        started.run.created_at,
        started.run.id,
        {},
        ActionStatus.RUNNING,
    )
    await store.add_message(acting)
    store.runs[started.run.id] = replace(started.run, status=RunStatus.RUNNING)
    after = service(core, Model(), store)  # the next process, on the same store
    assert await after.reconcile() == 1
    ended = await after.run(me, thread.id, started.run.id)
    assert ended.status is RunStatus.FAILED and ended.error == "corral restarted while the run was running"
    assert store.messages_["a-1"].status is ActionStatus.FAILED
    await runs.close()
