"""SQL implementation of ``corral.ports.KeyStore``: orgs and API keys (only a hash of each
secret is kept)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, update

from corral.domain import ApiKey, Org
from corral.errors import Conflict, NotFound
from corral.store.database import Database, utc
from corral.store.models import ApiKeyRow, OrgRow


class SqlKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        url = db.engine.url
        local = url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:")
        # Touched by every revocation through any process on this SQLite file (the CLI's
        # too), so that a server caching verified keys notices at once.
        self.revocations: Path | None = Path(f"{url.database}-revoked") if local else None

    async def add_org(self, org_id: str, name: str) -> Org:
        async with self.db.session() as s, s.begin():
            if await s.scalar(select(OrgRow).where(OrgRow.name == name)) is not None:
                raise Conflict(f"org {name!r} exists", field="name")
            row = OrgRow(id=org_id, name=name, created_at=datetime.now(UTC))
            s.add(row)
        return Org(row.id, row.name, row.created_at)

    async def org_by_name(self, name: str) -> Org:
        async with self.db.session() as s:
            row = await s.scalar(select(OrgRow).where(OrgRow.name == name))
            if row is None:
                raise NotFound(f"org {name!r} not found", field="org")
            return Org(row.id, row.name, utc(row.created_at))

    async def list_orgs(self) -> list[Org]:
        async with self.db.session() as s:
            rows = await s.scalars(select(OrgRow).order_by(OrgRow.created_at))
            return [Org(r.id, r.name, utc(r.created_at)) for r in rows.all()]

    async def add_key(self, key: ApiKey) -> None:
        async with self.db.session() as s, s.begin():
            s.add(
                ApiKeyRow(
                    id=key.id,
                    org_id=key.org_id,
                    role=key.role,
                    name=key.name,
                    secret_hash=key.secret_hash,
                    created_at=key.created_at,
                )
            )

    async def get_key(self, key_id: str) -> ApiKey | None:
        async with self.db.session() as s:
            row = await s.get(ApiKeyRow, key_id)
            return None if row is None else _key(row)

    async def list_keys(self, org_id: str) -> list[ApiKey]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(ApiKeyRow).where(ApiKeyRow.org_id == org_id).order_by(ApiKeyRow.created_at)
            )
            return [_key(r) for r in rows.all()]

    async def count_keys(self) -> int:
        async with self.db.session() as s:
            return int(await s.scalar(select(func.count()).select_from(ApiKeyRow)) or 0)

    async def mark_used(self, key_id: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(
                update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used_at=datetime.now(UTC))
            )

    async def revoke(self, org_id: str, key_id: str) -> None:
        async with self.db.session() as s, s.begin():
            row = await s.get(ApiKeyRow, key_id)
            if row is None or row.org_id != org_id:
                raise NotFound(f"key {key_id} not found")
            row.revoked_at = row.revoked_at or datetime.now(UTC)
        self.stamp_revocation()

    def stamp_revocation(self) -> None:
        """Touch ``revocations``: servers on this SQLite file forget what they remember
        of verified keys and of the keys and users behind tokens (a key revoked, a user
        removed or given another role)."""
        if self.revocations is not None:
            now = time.time_ns()
            self.revocations.touch()
            os.utime(self.revocations, ns=(now, now))


def _key(r: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=r.id,
        org_id=r.org_id,
        role=r.role,
        name=r.name,
        secret_hash=r.secret_hash,
        created_at=utc(r.created_at),
        last_used_at=utc(r.last_used_at) if r.last_used_at else None,
        revoked_at=utc(r.revoked_at) if r.revoked_at else None,
    )
