"""SQL implementation of ``corral.ports.SwitchStore``: one row per engaged kill switch
(``*`` = every org).

Engaging is idempotent (the first time and reason are kept); releasing a switch that
is not engaged is a no-op.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from corral.domain import Switch
from corral.store.database import Database, utc
from corral.store.models import KillSwitchRow


class SqlSwitchStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def engage(self, scope: str, reason: str = "") -> None:
        async with self.db.session() as s, s.begin():
            if await s.get(KillSwitchRow, scope) is None:
                s.add(KillSwitchRow(scope=scope, engaged_at=datetime.now(UTC), reason=reason[:512]))

    async def release(self, scope: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(delete(KillSwitchRow).where(KillSwitchRow.scope == scope))

    async def engaged(self) -> list[Switch]:
        async with self.db.session() as s:
            rows = await s.scalars(select(KillSwitchRow).order_by(KillSwitchRow.engaged_at))
            return [Switch(r.scope, utc(r.engaged_at), r.reason) for r in rows.all()]
