"""SQL implementation of ``corral.ports.EventStore``, the audit trail: the append-only
``events`` table.

Contracts:
- ``append`` writes a batch in one transaction, all or nothing. The table refuses
  UPDATE and DELETE (migration 0003); nothing here issues either.
- ``page`` reads one org's events (optionally of one sandbox, of some kinds) by id,
  newest first (``newest=True``) or oldest first. Ids grow with insertion order, so a
  cursor (the last id of the previous page) is stable while rows keep arriving.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import insert, or_, select

from corral.domain import Event, EventPage
from corral.store.database import Database, utc
from corral.store.models import EventRow

INSERT = insert(EventRow)


class SqlEventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, events: Sequence[Event]) -> None:
        if not events:
            return
        rows = [
            {
                "at": e.at,
                "org_id": e.org_id,
                "sandbox_id": e.sandbox_id,
                "kind": e.kind,
                "key_id": e.key_id,
                "client_id": e.client_id,
                "data": e.data,
            }
            for e in events
        ]
        await self.db.run(lambda conn: conn.execute(INSERT, rows))  # one executemany

    async def page(
        self,
        org_id: str,
        *,
        sandbox_id: str | None = None,
        kinds: Sequence[str] = (),
        actor: str | None = None,
        limit: int = 100,
        cursor: int | None = None,
        newest: bool = True,
    ) -> EventPage:
        q = select(EventRow).where(EventRow.org_id == org_id)
        if sandbox_id is not None:
            q = q.where(EventRow.sandbox_id == sandbox_id)
        if kinds:
            q = q.where(EventRow.kind.in_(list(kinds)))
        if actor is not None:
            q = q.where(or_(EventRow.key_id == actor, EventRow.client_id == actor))
        if cursor is not None:
            q = q.where(EventRow.id < cursor if newest else EventRow.id > cursor)
        q = q.order_by(EventRow.id.desc() if newest else EventRow.id.asc()).limit(limit + 1)
        async with self.db.session() as s:
            rows = list((await s.scalars(q)).all())
        more = len(rows) > limit
        events = [_event(r) for r in rows[:limit]]
        return EventPage(events, events[-1].id if more and events else None)


def _event(r: EventRow) -> Event:
    return Event(
        id=r.id,
        at=utc(r.at),
        org_id=r.org_id,
        sandbox_id=r.sandbox_id,
        kind=r.kind,
        key_id=r.key_id,
        client_id=r.client_id,
        data=dict(r.data or {}),
    )
