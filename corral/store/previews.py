"""SQL implementation of ``corral.ports.PreviewStore`` over ``PreviewRow`` and
``SandboxRow.preview_token_hash``.

The table has a unique (sandbox_id, port) constraint (migration 0002); a second row for
the same port is a Conflict, also when two creates race.
"""

from __future__ import annotations

import builtins

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from corral.domain import Preview
from corral.errors import Conflict, NotFound
from corral.store.database import Database, utc
from corral.store.models import PreviewRow, SandboxRow


class SqlPreviewStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, preview: Preview) -> None:
        try:
            async with self.db.session() as s, s.begin():
                taken = await s.scalar(
                    select(PreviewRow.id).where(
                        PreviewRow.sandbox_id == preview.sandbox_id, PreviewRow.port == preview.port
                    )
                )
                if taken is not None:
                    raise Conflict(f"port {preview.port} already has a preview URL", field="port")
                s.add(
                    PreviewRow(
                        id=preview.id,
                        sandbox_id=preview.sandbox_id,
                        org_id=preview.org_id,
                        port=preview.port,
                        public=preview.public,
                        domain=preview.domain,
                        created_at=preview.created_at,
                    )
                )
        except IntegrityError as exc:  # a concurrent create of the same port won
            raise Conflict(f"port {preview.port} already has a preview URL", field="port") from exc

    async def list(self, sandbox_id: str) -> builtins.list[Preview]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(PreviewRow).where(PreviewRow.sandbox_id == sandbox_id).order_by(PreviewRow.port)
            )
            return [_preview(r) for r in rows.all()]

    async def remove(self, sandbox_id: str, port: int) -> bool:
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                delete(PreviewRow).where(PreviewRow.sandbox_id == sandbox_id, PreviewRow.port == port)
            )
            return bool(getattr(result, "rowcount", 0))

    async def set_token_hash(self, sandbox_id: str, token_hash: str | None) -> None:
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                update(SandboxRow).where(SandboxRow.id == sandbox_id).values(preview_token_hash=token_hash)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"sandbox {sandbox_id} not found")


def _preview(r: PreviewRow) -> Preview:
    return Preview(
        id=r.id,
        sandbox_id=r.sandbox_id,
        org_id=r.org_id,
        port=r.port,
        public=bool(r.public),
        domain=r.domain,
        created_at=utc(r.created_at),
    )
