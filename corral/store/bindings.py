"""SQL implementation of ``corral.ports.BindingStore``: an org's service bindings, one
row per (org, name)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from corral.domain.bindings import Binding
from corral.errors import Conflict
from corral.store.database import Database, utc
from corral.store.models import ServiceBindingRow


class SqlBindingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, binding: Binding) -> None:
        try:
            async with self.db.session() as s, s.begin():
                if await s.get(ServiceBindingRow, (binding.org_id, binding.name)) is not None:
                    raise Conflict(f"binding {binding.name!r} exists", field="name")
                s.add(
                    ServiceBindingRow(
                        org_id=binding.org_id,
                        name=binding.name,
                        url=binding.url,
                        header=binding.header,
                        secret=binding.secret,
                        created_at=binding.created_at,
                    )
                )
        except IntegrityError as exc:  # added meanwhile by another writer
            raise Conflict(f"binding {binding.name!r} exists", field="name") from exc

    async def get(self, org_id: str, name: str) -> Binding | None:
        async with self.db.session() as s:
            row = await s.get(ServiceBindingRow, (org_id, name))
            return _binding(row) if row is not None else None

    async def list(self, org_id: str) -> list[Binding]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(ServiceBindingRow)
                .where(ServiceBindingRow.org_id == org_id)
                .order_by(ServiceBindingRow.name)
            )
            return [_binding(row) for row in rows.all()]

    async def remove(self, org_id: str, name: str) -> bool:
        async with self.db.session() as s, s.begin():
            done = await s.execute(
                delete(ServiceBindingRow).where(
                    ServiceBindingRow.org_id == org_id, ServiceBindingRow.name == name
                )
            )
            return bool(getattr(done, "rowcount", 0))


def _binding(row: ServiceBindingRow) -> Binding:
    return Binding(row.org_id, row.name, row.url, row.header, row.secret, utc(row.created_at))
