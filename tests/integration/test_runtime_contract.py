"""The Runtime port's contract, run against the fake (ProcessRuntime: no isolation, no
root) and the real one (RuncRuntime: marked ``integration``). What services may rely
on whichever runtime they are given."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from corral.domain import ExecRequest, Limits, RuntimeState, SandboxSpec, Template
from corral.errors import Conflict, InvalidInput
from corral.ports import Runtime
from corral.runtime.process import ProcessRuntime
from corral.runtime.runc import RuncRuntime
from tests.integration.conftest import new_id


@dataclass
class Subject:
    runtime: Runtime
    template: Template


@pytest.fixture(params=["process", pytest.param("runc", marks=pytest.mark.integration)])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "runc":
        settings = request.getfixturevalue("settings")
        template = request.getfixturevalue("base_template")
        yield Subject(RuncRuntime(settings), template)
        return
    state_dir = Path(tempfile.mkdtemp(prefix="corral-contract-", dir="/tmp"))
    runtime = ProcessRuntime(state_dir)
    try:
        yield Subject(runtime, Template("base", "sha256:0", "/", datetime.now(UTC)))
    finally:
        await runtime.reclaim(set())
        shutil.rmtree(state_dir, ignore_errors=True)


async def test_lifecycle(subject: Subject) -> None:
    runtime, sandbox_id = subject.runtime, new_id()
    assert await runtime.state(sandbox_id) == RuntimeState.MISSING
    await runtime.create(SandboxSpec(sandbox_id, subject.template, Limits(), {"WHO": "contract"}))
    try:
        assert await runtime.state(sandbox_id) == RuntimeState.RUNNING
        assert sandbox_id in await runtime.list_ids()
        result = await runtime.agent(sandbox_id).exec(ExecRequest("sh", ("-c", "echo $WHO"), timeout_s=20))
        assert (result.exit_code, result.stdout) == (0, b"contract\n")
        with pytest.raises(Conflict):
            await runtime.create(SandboxSpec(sandbox_id, subject.template, Limits()))
    finally:
        await runtime.destroy(sandbox_id)
    assert await runtime.state(sandbox_id) == RuntimeState.MISSING
    assert sandbox_id not in await runtime.list_ids()
    await runtime.destroy(sandbox_id)  # idempotent


async def test_ids_are_validated(subject: Subject) -> None:
    for bad in ("../x", "sb-UPPER1234", "sb-short", "sb-abcdefgh\n", ""):
        with pytest.raises(InvalidInput):
            await subject.runtime.destroy(bad)
        with pytest.raises(InvalidInput):
            await subject.runtime.create(SandboxSpec(bad, subject.template, Limits()))


async def test_reclaim_keeps_only_what_it_is_told(subject: Subject) -> None:
    runtime = subject.runtime
    kept, dropped = new_id(), new_id()
    for sandbox_id in (kept, dropped):
        await runtime.create(SandboxSpec(sandbox_id, subject.template, Limits()))
    try:
        others = await runtime.list_ids() - {kept, dropped}
        removed = await runtime.reclaim(keep=others | {kept})
        assert dropped in removed and kept not in removed
        assert await runtime.state(dropped) == RuntimeState.MISSING
        assert await runtime.state(kept) == RuntimeState.RUNNING
    finally:
        await runtime.destroy(kept)
        await runtime.destroy(dropped)


async def test_health(subject: Subject) -> None:
    health = await subject.runtime.health()
    assert health["ok"] is True
    assert health["runtime"] == subject.runtime.name
