"""SQL store of code sessions (``corral.domain.sessions``): the ``code_sessions`` table
(migration 0007) and ``SqlSessionStore``.

Rows are listed newest first by ``seq`` (an increasing integer, the page cursor). A
session's program is never stored; its result is (bounded by the runner).
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from corral.domain.config_json import egress_from, egress_json
from corral.domain.sessions import (
    CodeSession,
    KillReason,
    Language,
    Phase,
    SessionLimits,
    SessionResult,
)
from corral.errors import NotFound
from corral.store.database import Database, utc
from corral.store.models import Base


class SessionRow(Base):
    __tablename__ = "code_sessions"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    created_by: Mapped[str] = mapped_column(String(128))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    language: Mapped[str] = mapped_column(String(16))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON)
    egress: Mapped[dict[str, Any]] = mapped_column(JSON)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    bindings: Mapped[list[str]] = mapped_column(JSON)
    webhook_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    kill_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SqlSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, session: CodeSession) -> None:
        async with self.db.session() as s, s.begin():
            s.add(SessionRow(**_values(session)))

    async def update(self, session: CodeSession) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(update(SessionRow).where(SessionRow.id == session.id).values(**_values(session)))

    async def get(self, org_id: str, session_id: str) -> CodeSession:
        """NotFound for an unknown id or another org's session."""
        async with self.db.session() as s:
            row = await s.scalar(
                select(SessionRow).where(SessionRow.id == session_id, SessionRow.org_id == org_id)
            )
        if row is None:
            raise NotFound(f"session {session_id} not found")
        return _session(row)

    async def page(
        self, org_id: str, limit: int, cursor: int | None
    ) -> tuple[builtins.list[CodeSession], int | None]:
        """Newest first; the cursor of the next page, or None at the end."""
        q = select(SessionRow).where(SessionRow.org_id == org_id)
        if cursor is not None:
            q = q.where(SessionRow.seq < cursor)
        q = q.order_by(SessionRow.seq.desc()).limit(limit + 1)
        async with self.db.session() as s:
            rows = list((await s.scalars(q)).all())
        more = len(rows) > limit
        return [_session(r) for r in rows[:limit]], rows[limit - 1].seq if more else None

    async def unfinished(self) -> builtins.list[CodeSession]:
        """Every session not yet torn down, of every org (for reconcile)."""
        async with self.db.session() as s:
            rows = await s.scalars(select(SessionRow).where(SessionRow.phase != Phase.TORN_DOWN.value))
            return [_session(r) for r in rows.all()]


def _values(c: CodeSession) -> dict[str, Any]:
    return {
        "id": c.id,
        "org_id": c.org_id,
        "created_by": c.created_by,
        "phase": c.phase.value,
        "language": c.language.value,
        "limits": {
            "memory_mib": c.limits.memory_mib,
            "wall_clock_s": c.limits.wall_clock_s,
            "cpu_millicores": c.limits.cpu_millicores,
            "cpu_seconds": c.limits.cpu_seconds,
            "pids": c.limits.pids,
        },
        "egress": egress_json(c.egress),
        "labels": dict(c.labels),
        "bindings": list(c.bindings),
        "webhook_url": c.webhook_url,
        "sandbox_id": c.sandbox_id,
        "outcome": c.outcome.value if c.outcome else None,
        "kill_reason": c.kill_reason.value if c.kill_reason else None,
        "error": c.error,
        "result": _result_json(c.result) if c.result else None,
        "created_at": c.created_at,
        "started_at": c.started_at,
        "finished_at": c.finished_at,
    }


def _result_json(r: SessionResult) -> dict[str, Any]:
    return {
        "exit_code": r.exit_code,
        "result": r.result,
        "stdout": r.stdout,
        "stderr": r.stderr,
        "kill_reason": r.kill_reason.value if r.kill_reason else None,
        "duration_ms": r.duration_ms,
        "stdout_truncated": r.stdout_truncated,
        "stderr_truncated": r.stderr_truncated,
    }


def _result(raw: dict[str, Any]) -> SessionResult:
    reason = raw.get("kill_reason")
    return SessionResult(
        exit_code=raw.get("exit_code"),
        result=raw.get("result"),
        stdout=raw.get("stdout", ""),
        stderr=raw.get("stderr", ""),
        kill_reason=KillReason(reason) if reason else None,
        duration_ms=int(raw.get("duration_ms", 0)),
        stdout_truncated=bool(raw.get("stdout_truncated")),
        stderr_truncated=bool(raw.get("stderr_truncated")),
    )


def _session(r: SessionRow) -> CodeSession:
    limits = r.limits
    return CodeSession(
        id=r.id,
        org_id=r.org_id,
        created_by=r.created_by,
        phase=Phase(r.phase),
        language=Language(r.language),
        limits=SessionLimits(
            memory_mib=int(limits["memory_mib"]),
            wall_clock_s=int(limits["wall_clock_s"]),
            cpu_millicores=int(limits["cpu_millicores"]),
            cpu_seconds=float(limits["cpu_seconds"]),
            pids=int(limits["pids"]),
        ),
        egress=egress_from(r.egress),
        created_at=utc(r.created_at),
        labels=dict(r.labels or {}),
        bindings=tuple(r.bindings or ()),
        webhook_url=r.webhook_url,
        sandbox_id=r.sandbox_id,
        outcome=Phase(r.outcome) if r.outcome else None,
        kill_reason=KillReason(r.kill_reason) if r.kill_reason else None,
        error=r.error,
        result=_result(r.result) if r.result else None,
        started_at=utc(r.started_at) if r.started_at else None,
        finished_at=utc(r.finished_at) if r.finished_at else None,
    )
