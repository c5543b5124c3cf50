"""SQL implementations of ``corral.ports.CheckpointStore`` and ``TemplateBuildStore``.

A checkpoint's name is unique per sandbox (a unique constraint, so two concurrent
creates cannot both win). Patch sequence numbers come from a counter on the
checkpoint row, bumped in the same transaction as the insert: 1, 2, 3, ... per
checkpoint, never reused after a delete.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from corral.domain import (
    BuildStatus,
    Checkpoint,
    CheckpointStatus,
    Patch,
    TemplateBuild,
)
from corral.domain.config_json import config_json, config_of
from corral.errors import Conflict, NotFound
from corral.ids import new_id
from corral.store.database import Database, utc
from corral.store.models import CheckpointRow, PatchRow, TemplateBuildRow


class SqlCheckpointStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, checkpoint: Checkpoint) -> None:
        try:
            async with self.db.session() as s, s.begin():
                s.add(_row(checkpoint))
        except IntegrityError as exc:
            raise Conflict(
                f"sandbox {checkpoint.sandbox_id} already has a checkpoint named {checkpoint.name!r}",
                field="name",
            ) from exc

    async def get(self, org_id: str, checkpoint_id: str) -> Checkpoint:
        async with self.db.session() as s:
            row = await s.get(CheckpointRow, checkpoint_id)
            if row is None or row.org_id != org_id:
                raise NotFound(f"checkpoint {checkpoint_id} not found")
            return _checkpoint(row)

    async def list(self, org_id: str, sandbox_id: str) -> builtins.list[Checkpoint]:
        q = select(CheckpointRow).where(
            CheckpointRow.org_id == org_id, CheckpointRow.sandbox_id == sandbox_id
        )
        async with self.db.session() as s:
            rows = await s.scalars(q.order_by(CheckpointRow.created_at, CheckpointRow.id))
            return [_checkpoint(r) for r in rows.all()]

    async def list_all(self) -> builtins.list[Checkpoint]:
        async with self.db.session() as s:
            rows = await s.scalars(select(CheckpointRow).order_by(CheckpointRow.created_at))
            return [_checkpoint(r) for r in rows.all()]

    async def update(self, checkpoint: Checkpoint) -> None:
        async with self.db.session() as s, s.begin():
            row = await s.get(CheckpointRow, checkpoint.id)
            if row is None:
                raise NotFound(f"checkpoint {checkpoint.id} not found")
            row.status = checkpoint.status.value
            row.size_bytes = checkpoint.size_bytes
            row.error = checkpoint.error

    async def remove(self, checkpoint_id: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(delete(PatchRow).where(PatchRow.checkpoint_id == checkpoint_id))
            await s.execute(delete(CheckpointRow).where(CheckpointRow.id == checkpoint_id))

    async def add_patch(self, org_id: str, checkpoint_id: str, script: str, description: str) -> Patch:
        async with self.db.session() as s, s.begin():
            row = await s.get(CheckpointRow, checkpoint_id, with_for_update=True)
            if row is None or row.org_id != org_id:
                raise NotFound(f"checkpoint {checkpoint_id} not found")
            patch = Patch(
                id=new_id("pa"),
                checkpoint_id=checkpoint_id,
                org_id=org_id,
                sequence=row.next_patch,
                script=script,
                description=description,
                created_at=datetime.now(UTC),
            )
            row.next_patch += 1
            s.add(
                PatchRow(
                    id=patch.id,
                    checkpoint_id=checkpoint_id,
                    org_id=org_id,
                    sequence=patch.sequence,
                    script=script,
                    description=description,
                    strategy=patch.strategy,
                    created_at=patch.created_at,
                )
            )
            return patch

    async def patches(self, checkpoint_id: str) -> builtins.list[Patch]:
        q = select(PatchRow).where(PatchRow.checkpoint_id == checkpoint_id).order_by(PatchRow.sequence)
        async with self.db.session() as s:
            return [_patch(r) for r in (await s.scalars(q)).all()]

    async def remove_patch(self, checkpoint_id: str, patch_id: str) -> bool:
        async with self.db.session() as s, s.begin():
            result = await s.execute(
                delete(PatchRow).where(PatchRow.id == patch_id, PatchRow.checkpoint_id == checkpoint_id)
            )
            return bool(getattr(result, "rowcount", 0))


class SqlTemplateBuildStore:
    """Dockerfile templates, one row per (org, name); every lookup by name is an org's."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, build: TemplateBuild) -> None:
        async with self.db.session() as s, s.begin():
            await s.merge(
                TemplateBuildRow(
                    id=build.id,
                    name=build.name,
                    image=build.image,
                    org_id=build.org_id,
                    tag=build.tag,
                    status=build.status.value,
                    dockerfile=build.dockerfile,
                    digest=build.digest,
                    error=build.error,
                    created_at=build.created_at,
                )
            )

    async def get(self, org_id: str, name: str) -> TemplateBuild | None:
        async with self.db.session() as s:
            row = await s.scalar(
                select(TemplateBuildRow).where(
                    TemplateBuildRow.org_id == org_id, TemplateBuildRow.name == name
                )
            )
            return None if row is None else _build(row)

    async def list(self, org_id: str | None = None) -> builtins.list[TemplateBuild]:
        async with self.db.session() as s:
            query = select(TemplateBuildRow).order_by(TemplateBuildRow.name)
            if org_id is not None:
                query = query.where(TemplateBuildRow.org_id == org_id)
            return [_build(r) for r in (await s.scalars(query)).all()]

    async def remove(self, org_id: str, name: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(
                delete(TemplateBuildRow).where(
                    TemplateBuildRow.org_id == org_id, TemplateBuildRow.name == name
                )
            )


def _row(cp: Checkpoint) -> CheckpointRow:
    return CheckpointRow(
        id=cp.id,
        org_id=cp.org_id,
        sandbox_id=cp.sandbox_id,
        name=cp.name,
        status=cp.status.value,
        config=config_json(cp.config),
        size_bytes=cp.size_bytes,
        error=cp.error,
        created_at=cp.created_at,
        next_patch=1,
    )


def _checkpoint(r: CheckpointRow) -> Checkpoint:
    return Checkpoint(
        id=r.id,
        org_id=r.org_id,
        sandbox_id=r.sandbox_id,
        name=r.name,
        status=CheckpointStatus(r.status),
        config=config_of(dict(r.config)),
        created_at=utc(r.created_at),
        size_bytes=r.size_bytes,
        error=r.error,
    )


def _patch(r: PatchRow) -> Patch:
    return Patch(
        id=r.id,
        checkpoint_id=r.checkpoint_id,
        org_id=r.org_id,
        sequence=r.sequence,
        script=r.script,
        description=r.description,
        created_at=utc(r.created_at),
        strategy=r.strategy,
    )


def _build(r: TemplateBuildRow) -> TemplateBuild:
    return TemplateBuild(
        id=r.id,
        org_id=r.org_id,
        name=r.name,
        image=r.image,
        tag=r.tag,
        status=BuildStatus(r.status),
        dockerfile=r.dockerfile,
        created_at=utc(r.created_at),
        digest=r.digest,
        error=r.error,
    )
