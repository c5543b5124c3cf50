"""Exec round trips in turns (corral/services/commands.py, ``max_concurrent_execs``): a
bounded number at once, orgs taking turns for the rest, a full wait queue refused over
HTTP with 429 and Retry-After naming the setting, on the in-memory fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from corral.core import Core
from corral.fair import FairWaiters
from corral.services.create_queue import CreateQueue
from tests.support.conditions import eventually_async
from tests.unit.api.harness import new_key, serving

ECHO = {"cmd": "echo", "args": ["ok"]}


class Recorded(CreateQueue):
    """The exec queue, saying which org each turn went to, in order."""

    served: list[str]

    def __init__(self, concurrency: int, max_waiting: int) -> None:
        super().__init__(concurrency, max_waiting)
        self._waiters = RecordedWaiters(self)


class RecordedWaiters(FairWaiters[str, "asyncio.Future[None]"]):
    def __init__(self, queue: Recorded) -> None:
        super().__init__()
        self._queue = queue

    def served(self, key: str) -> None:
        self._queue.served.append(key)
        super().served(key)


async def sandbox(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> str:
    created = await client.post("/api/sandboxes", json={}, headers=headers)
    assert created.status_code == 201, created.text
    return str(created.json()["sandboxID"])


async def test_a_full_exec_queue_is_429_with_retry_after_naming_the_setting(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_execs=1, max_queued_execs=0) as (app, client):
        core: Core = app.state.core
        sandbox_id = await sandbox(client)
        async with core.commands.turns.turn("another org"):  # the node's one exec at work
            refused = await client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json=ECHO)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert "max_queued_execs" in refused.json()["error"]
        done = await client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json=ECHO)
        assert done.status_code == 200 and done.json()["stdout"] == "ok\n"  # room again


async def test_execs_wait_their_turn_and_orgs_take_turns(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_execs=1, max_queued_execs=16) as (app, client):
        core: Core = app.state.core
        turns = core.commands.turns = Recorded(1, 16)
        turns.served = []
        rival = {"X-API-Key": await new_key(app, "owner", "rival")}
        mine, theirs = await sandbox(client), await sandbox(client, rival)

        async def run(sandbox_id: str, headers: dict[str, str] | None = None) -> None:
            answer = await client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json=ECHO, headers=headers)
            assert answer.status_code == 200 and answer.json()["stdout"] == "ok\n"

        tasks: list[asyncio.Task[None]] = []
        async with turns.turn("another org"):
            for _ in range(3):  # one org's burst, queued first
                tasks.append(asyncio.create_task(run(mine)))
                await eventually_async(lambda: turns.waiting == len(tasks), 10, "the exec never queued")
            tasks.append(asyncio.create_task(run(theirs, rival)))
            await eventually_async(lambda: turns.waiting == 4, 10, "the rival's exec never queued")
            assert not any(task.done() for task in tasks)  # all wait while the one turn is held
        await asyncio.gather(*tasks)
        first, mine_org, rival_org, *rest = turns.served
        assert first == "another org" and mine_org != rival_org
        assert rest == [mine_org, mine_org]  # the rival's one exec went second, not behind the burst
        assert turns.running == 0 and turns.waiting == 0


async def test_a_long_command_stops_holding_its_turn(tmp_path: Path) -> None:
    async with serving(tmp_path, max_concurrent_execs=1, exec_turn_max_s=0.05) as (app, client):
        core: Core = app.state.core
        sandbox_id = await sandbox(client)
        async with core.commands.turns.turn("another org"):  # held past exec_turn_max_s
            done = await client.post(f"/api/sandboxes/{sandbox_id}/exec/run", json=ECHO)
            assert done.status_code == 200 and done.json()["stdout"] == "ok\n"
            assert core.commands.turns.running == 0  # ours ended; the long one no longer counts
