"""A code session whose sandbox the node has no room for waits, still pending, and
tries again when another session is torn down (services/sessions.py,
``_create_when_room``), instead of failing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.errors import NoRoom
from corral.services import sessions
from corral.services.sandboxes import CreateSandbox


class Sandboxes:
    """Refuses the first ``full`` creates for want of room, then gives a sandbox."""

    def __init__(self, full: int) -> None:
        self.full = full
        self.asked = 0

    async def create(self, actor: Any, request: CreateSandbox) -> str:
        self.asked += 1
        if self.asked <= self.full:
            raise NoRoom("this node cannot promise 2048 MiB more disk")
        return "sb-made"


class Audit:
    def __init__(self) -> None:
        self.listeners: list[Any] = []


def service(sandboxes: Sandboxes) -> sessions.SessionService:
    none: Any = None
    return sessions.SessionService(none, sandboxes, none, Audit(), none, none)  # type: ignore[arg-type]


def live() -> Any:
    return sessions._Live(session=None)  # type: ignore[arg-type]


async def test_a_session_waits_for_room_and_takes_it_when_another_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions, "ROOM_RETRY_S", 60.0)  # only a teardown can wake it in time
    sandboxes = Sandboxes(full=2)
    svc = service(sandboxes)
    waiting = asyncio.create_task(svc._create_when_room(live(), None, CreateSandbox()))  # type: ignore[arg-type]
    for tries in (1, 2):
        while sandboxes.asked < tries:
            await asyncio.sleep(0)
        assert not waiting.done()  # refused: it waits, it does not fail
        svc._room.set()  # what a session's teardown does
        svc._room = asyncio.Event()
    assert await asyncio.wait_for(waiting, 5) == "sb-made"
    assert sandboxes.asked == 3


async def test_a_session_deleted_while_it_waits_for_room_ends_there() -> None:
    sandboxes = Sandboxes(full=10)
    svc = service(sandboxes)
    state = live()
    waiting = asyncio.create_task(svc._create_when_room(state, None, CreateSandbox()))  # type: ignore[arg-type]
    while sandboxes.asked < 1:
        await asyncio.sleep(0)
    state.stop.set()
    svc._room.set()
    with pytest.raises(sessions._Deleted):
        await asyncio.wait_for(waiting, 5)
    assert sandboxes.asked == 1


async def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "ROOM_WAIT_S", 0.0)
    with pytest.raises(NoRoom):
        await service(Sandboxes(full=1))._create_when_room(live(), None, CreateSandbox())  # type: ignore[arg-type]
