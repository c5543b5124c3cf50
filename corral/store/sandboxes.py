"""SQL implementation of ``corral.ports.SandboxStore``."""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Select, Table, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from corral.domain import LIVE_STATUSES, Holdings, Limits, PatchRun, Sandbox, SandboxStatus
from corral.domain.config_json import egress_from, egress_json
from corral.errors import Conflict, InvalidInput, NotFound
from corral.store.database import Database, utc
from corral.store.models import SandboxRow

LIVE = tuple(sorted(status.value for status in LIVE_STATUSES))  # they hold memory: counted, promised
HOLDING_DISK = (*LIVE, SandboxStatus.HIBERNATED.value)  # a hibernated sandbox keeps its disk


_LIVE_ROW = SandboxRow.status.in_(LIVE)
# built once (a create reads it): an org's live sandboxes, the node's promised disk and memory
HOLDINGS = select(
    func.count().filter(_LIVE_ROW & (SandboxRow.org_id == bindparam("org_id"))),
    func.coalesce(func.sum(SandboxRow.disk_mb), 0),
    func.coalesce(func.sum(SandboxRow.memory_mb).filter(_LIVE_ROW), 0),
).where(SandboxRow.status.in_(HOLDING_DISK))


INSERT = insert(cast(Table, SandboxRow.__table__))
COLUMN_OF = {attribute.key: attribute.columns[0].key for attribute in SandboxRow.__mapper__.column_attrs}


class SqlSandboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, sandbox: Sandbox) -> None:
        values = _columns(sandbox)
        try:  # one INSERT, no read before it; Core: the ORM's unit of work costs twice as much
            await self.db.run(lambda conn: conn.execute(INSERT, values))
        except IntegrityError as exc:
            raise Conflict(f"sandbox {sandbox.id} exists") from exc

    async def get(self, org_id: str, sandbox_id: str) -> Sandbox:
        found = await self.find(sandbox_id)
        if found is None or found.org_id != org_id:
            raise NotFound(f"sandbox {sandbox_id} not found")
        return found

    async def find(self, sandbox_id: str) -> Sandbox | None:
        def read(conn: Connection) -> Sandbox | None:
            with Session(conn) as s:
                row = s.get(SandboxRow, sandbox_id)
                return None if row is None else _sandbox(row)

        return await self.db.run(read)

    async def list(
        self,
        org_id: str,
        *,
        live_only: bool = False,
        statuses: Collection[SandboxStatus] | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> builtins.list[Sandbox]:
        q = select(SandboxRow).where(SandboxRow.org_id == org_id)
        if statuses is not None:
            q = q.where(SandboxRow.status.in_(sorted(status.value for status in statuses)))
        if after is not None:
            at = select(SandboxRow.created_at).where(SandboxRow.id == after, SandboxRow.org_id == org_id)
            async with self.db.session() as s:
                created = await s.scalar(at)
            if created is None:
                raise InvalidInput(f"cursor {after!r} is not a sandbox of this org", field="cursor")
            q = q.where(
                (SandboxRow.created_at > created)
                | ((SandboxRow.created_at == created) & (SandboxRow.id > after))
            )
        if limit is not None:
            q = q.order_by(SandboxRow.created_at, SandboxRow.id).limit(limit)
        return await self._select(q, live_only)

    async def list_all(self, *, live_only: bool = False) -> builtins.list[Sandbox]:
        return await self._select(select(SandboxRow), live_only)

    async def holdings(self, org_id: str | None = None) -> Holdings:
        org_live, disk, memory = await self.db.run(
            lambda conn: conn.execute(HOLDINGS, {"org_id": org_id}).one()
        )
        return Holdings(int(org_live or 0), int(disk or 0), int(memory or 0))

    async def _select(self, stmt: Select[SandboxRow], live_only: bool) -> builtins.list[Sandbox]:
        if live_only:
            stmt = stmt.where(SandboxRow.status.in_(LIVE))
        async with self.db.session() as s:
            rows = await s.scalars(stmt.order_by(SandboxRow.created_at))
            return [_sandbox(r) for r in rows.all()]

    async def update(self, sandbox: Sandbox) -> None:
        async with self.db.session() as s, s.begin():
            row = await s.get(SandboxRow, sandbox.id)
            if row is None:
                raise NotFound(f"sandbox {sandbox.id} not found")
            if row.status == SandboxStatus.STOPPED.value and sandbox.status is not SandboxStatus.STOPPED:
                # Written from a read taken before a concurrent kill: stopped is final.
                raise Conflict(f"sandbox {sandbox.id} is stopped")
            await s.merge(_row(sandbox))

    async def set_status(
        self, sandbox_id: str, was: SandboxStatus, now: SandboxStatus, last_active_at: datetime
    ) -> bool:
        async with self.db.session() as s, s.begin():
            done = await s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id, SandboxRow.status == was.value)
                .values(status=now.value, last_active_at=last_active_at)
            )
            return bool(done.rowcount)  # type: ignore[attr-defined]

    async def mark_stopped(self, sandbox_id: str, ended_at: datetime, error: str | None) -> None:
        async with self.db.session() as s, s.begin():
            done = await s.execute(
                update(SandboxRow)
                .where(SandboxRow.id == sandbox_id)
                .values(status=SandboxStatus.STOPPED.value, ended_at=ended_at, error=error)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                raise NotFound(f"sandbox {sandbox_id} not found")

    async def touch(self, times: Mapping[str, datetime]) -> None:
        if not times:
            return
        statement = (
            update(SandboxRow)
            .where(SandboxRow.id == bindparam("sandbox_id"))
            .values(last_active_at=bindparam("when"))
        )
        async with self.db.engine.begin() as conn:  # one executemany; a row gone meanwhile matches none
            await conn.execute(statement, [{"sandbox_id": i, "when": when} for i, when in times.items()])


def _row(sb: Sandbox) -> SandboxRow:
    return SandboxRow(**_values(sb))


def _columns(sb: Sandbox) -> dict[str, object]:
    """``_values`` keyed by column (``meta`` is the column ``metadata``), for Core."""
    return {COLUMN_OF[name]: value for name, value in _values(sb).items()}


def _values(sb: Sandbox) -> dict[str, object]:
    """The row's values, keyed by the model's attributes."""
    return {
        "id": sb.id,
        "org_id": sb.org_id,
        "template": sb.template,
        "status": sb.status.value,
        "cpu_count": sb.limits.cpu_count,
        "memory_mb": sb.limits.memory_mb,
        "disk_mb": sb.limits.disk_mb,
        "pids": sb.limits.pids,
        "cpu_seconds": sb.limits.cpu_seconds,
        "envs": dict(sb.envs),
        "meta": dict(sb.metadata),
        "timeout_s": sb.timeout_s,
        "created_at": sb.created_at,
        "last_active_at": sb.last_active_at,
        "ended_at": sb.ended_at,
        "error": sb.error,
        "egress": egress_json(sb.egress),
        "preview_token_hash": sb.preview_token_hash,
        "template_digest": sb.template_digest,
        "hold_until": sb.hold_until,
        "checkpoint_id": sb.checkpoint_id,
        "patches": [asdict(run) for run in sb.patches] or None,
        "deadline_at": sb.deadline_at,
    }


def _sandbox(r: SandboxRow) -> Sandbox:
    return Sandbox(
        id=r.id,
        org_id=r.org_id,
        template=r.template,
        status=SandboxStatus(r.status),
        limits=Limits(r.cpu_count, r.memory_mb, r.disk_mb, r.pids, r.cpu_seconds),
        envs=dict(r.envs),
        metadata=dict(r.meta),
        timeout_s=r.timeout_s,
        created_at=utc(r.created_at),
        last_active_at=utc(r.last_active_at),
        ended_at=utc(r.ended_at) if r.ended_at else None,
        error=r.error,
        egress=egress_from(r.egress),
        preview_token_hash=r.preview_token_hash,
        template_digest=r.template_digest,
        hold_until=utc(r.hold_until) if r.hold_until else None,
        checkpoint_id=r.checkpoint_id,
        patches=tuple(_patch_run(run) for run in r.patches or ()),
        deadline_at=utc(r.deadline_at) if r.deadline_at else None,
    )


def _patch_run(raw: dict[str, object]) -> PatchRun:
    code = raw.get("exit_code")
    error = raw.get("error")
    return PatchRun(
        patch_id=str(raw.get("patch_id")),
        sequence=int(str(raw.get("sequence", 0))),
        status=str(raw.get("status")),
        exit_code=code if isinstance(code, int) else None,
        error=str(error) if error is not None else None,
    )
