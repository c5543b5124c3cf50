"""SQL store of agent threads, their messages and runs (``corral.domain.runs``): the
``agent_threads``, ``agent_messages`` and ``agent_runs`` tables (migration 0012) and
``SqlThreadStore``, the ``ThreadStore`` of ``services/runs.py``.

Messages are listed in the order they were added (``seq``). A run keeps the sha256 of
its publicAccessToken, never the token.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from corral.domain.runs import (
    ActionStatus,
    Author,
    DesktopInfo,
    DesktopStatus,
    Message,
    Prompts,
    Run,
    RunStatus,
    Thread,
)
from corral.errors import NotFound
from corral.store.database import Database, utc
from corral.store.models import Base

UNFINISHED = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)


class ThreadRow(Base):
    __tablename__ = "agent_threads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    prompts: Mapped[dict[str, Any]] = mapped_column(JSON)
    lifetime_s: Mapped[int] = mapped_column(Integer)
    desktop: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MessageRow(Base):
    __tablename__ = "agent_messages"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    thread_id: Mapped[str] = mapped_column(String(64), index=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    action: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RunRow(Base):
    __tablename__ = "agent_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    thread_id: Mapped[str] = mapped_column(String(64), index=True)
    org_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    desktop: Mapped[dict[str, Any]] = mapped_column(JSON)
    steps: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SqlThreadStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_thread(self, thread: Thread) -> None:
        async with self.db.session() as s, s.begin():
            s.add(ThreadRow(**_thread_values(thread)))

    async def update_thread(self, thread: Thread) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(ThreadRow).where(ThreadRow.id == thread.id).values(**_thread_values(thread))
            )

    async def get_thread(self, org_id: str, thread_id: str) -> Thread:
        """NotFound for an unknown id or another org's thread."""
        async with self.db.session() as s:
            row = await s.scalar(
                select(ThreadRow).where(ThreadRow.id == thread_id, ThreadRow.org_id == org_id)
            )
        if row is None:
            raise NotFound(f"thread {thread_id} not found")
        return _thread(row)

    async def add_message(self, message: Message) -> None:
        async with self.db.session() as s, s.begin():
            s.add(MessageRow(**_message_values(message)))

    async def update_message(self, message: Message) -> None:
        async with self.db.session() as s, s.begin():
            values = _message_values(message)
            await s.execute(update(MessageRow).where(MessageRow.id == message.id).values(**values))

    async def messages(self, thread_id: str) -> builtins.list[Message]:
        """The thread's messages, oldest first."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(MessageRow).where(MessageRow.thread_id == thread_id).order_by(MessageRow.seq)
            )
            return [_message(r) for r in rows.all()]

    async def add_run(self, run: Run) -> None:
        async with self.db.session() as s, s.begin():
            s.add(RunRow(**_run_values(run)))

    async def update_run(self, run: Run) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(update(RunRow).where(RunRow.id == run.id).values(**_run_values(run)))

    async def get_run(self, thread_id: str, run_id: str) -> Run:
        """The run of that thread, whatever its org (the caller checks); NotFound else."""
        async with self.db.session() as s:
            row = await s.scalar(select(RunRow).where(RunRow.id == run_id, RunRow.thread_id == thread_id))
        if row is None:
            raise NotFound(f"run {run_id} not found")
        return _run(row)

    async def unfinished_runs(self) -> builtins.list[Run]:
        """Runs of every org still QUEUED or RUNNING (for reconcile)."""
        async with self.db.session() as s:
            rows = await s.scalars(select(RunRow).where(RunRow.status.in_(UNFINISHED)))
            return [_run(r) for r in rows.all()]


def _desktop_json(d: DesktopInfo) -> dict[str, Any]:
    return {"sandbox_id": d.sandbox_id, "vnc_url": d.vnc_url, "status": d.status.value if d.status else None}


def _desktop(raw: dict[str, Any]) -> DesktopInfo:
    status = raw.get("status")
    return DesktopInfo(raw.get("sandbox_id"), raw.get("vnc_url"), DesktopStatus(status) if status else None)


def _thread_values(t: Thread) -> dict[str, Any]:
    return {
        "id": t.id,
        "org_id": t.org_id,
        "created_by": t.created_by,
        "prompts": {"user": t.prompts.user, "goal": t.prompts.goal, "system": t.prompts.system},
        "lifetime_s": t.lifetime_s,
        "desktop": _desktop_json(t.desktop),
        "created_at": t.created_at,
    }


def _thread(r: ThreadRow) -> Thread:
    p = r.prompts
    return Thread(
        id=r.id,
        org_id=r.org_id,
        created_by=r.created_by,
        prompts=Prompts(str(p["user"]), str(p["goal"]), p.get("system")),
        lifetime_s=r.lifetime_s,
        created_at=utc(r.created_at),
        desktop=_desktop(r.desktop or {}),
    )


def _message_values(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "thread_id": m.thread_id,
        "run_id": m.run_id,
        "role": m.role.value,
        "content": m.content,
        "action": m.action,
        "status": m.status.value if m.status else None,
        "detail": m.detail,
        "created_at": m.created_at,
    }


def _message(r: MessageRow) -> Message:
    return Message(
        id=r.id,
        thread_id=r.thread_id,
        role=Author(r.role),
        content=r.content,
        created_at=utc(r.created_at),
        run_id=r.run_id,
        action=r.action,
        status=ActionStatus(r.status) if r.status else None,
        detail=r.detail,
    )


def _run_values(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "thread_id": r.thread_id,
        "org_id": r.org_id,
        "status": r.status.value,
        "token_hash": r.token_hash,
        "desktop": _desktop_json(r.desktop),
        "steps": r.steps,
        "error": r.error,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
    }


def _run(r: RunRow) -> Run:
    return Run(
        id=r.id,
        thread_id=r.thread_id,
        org_id=r.org_id,
        status=RunStatus(r.status),
        token_hash=r.token_hash,
        created_at=utc(r.created_at),
        desktop=_desktop(r.desktop or {}),
        steps=r.steps,
        error=r.error,
        started_at=utc(r.started_at) if r.started_at else None,
        finished_at=utc(r.finished_at) if r.finished_at else None,
    )
