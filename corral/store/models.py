"""SQLAlchemy tables of the store. Migrations in ``migrations/`` must match these."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class OrgRow(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SandboxRow(Base):
    __tablename__ = "sandboxes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    template: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), index=True)
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(Integer)
    disk_mb: Mapped[int] = mapped_column(Integer)
    pids: Mapped[int] = mapped_column(Integer)
    cpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # migration 0009
    envs: Mapped[dict[str, str]] = mapped_column(JSON)
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    timeout_s: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_active_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    egress: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    preview_token_hash: Mapped[str | None] = mapped_column(String(128), nullable=True)
    template_digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    hold_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    patches: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # 0010


class EventRow(Base):
    """Append-only record of what happened to a sandbox (audit trail, egress denials).

    The store itself refuses UPDATE and DELETE of these rows (migration 0003).
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    sandbox_id: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    kind: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    data: Mapped[dict[str, object]] = mapped_column(JSON)


class PreviewRow(Base):
    """A preview URL: port of a sandbox reachable through the gateway."""

    __tablename__ = "previews"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sandbox_id: Mapped[str] = mapped_column(ForeignKey("sandboxes.id"), index=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    port: Mapped[int] = mapped_column(Integer)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    domain: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UserRow(Base):
    """A person of an org; user JWTs name one (``sub``)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class KillSwitchRow(Base):
    """An engaged kill switch: ``scope`` is an org id, or ``*`` for every org. Released
    switches have no row."""

    __tablename__ = "kill_switches"

    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    engaged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(String(512), default="")


class CheckpointRow(Base):
    """A checkpoint of a sandbox; its files are under ``<data>/checkpoints/<id>/``."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("sandbox_id", "name", name="uq_checkpoints_sandbox_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    sandbox_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, object]] = mapped_column(JSON)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    next_patch: Mapped[int] = mapped_column(Integer)  # the next patch's sequence number


class PatchRow(Base):
    """A script run in every sandbox forked from its checkpoint, by sequence."""

    __tablename__ = "checkpoint_patches"
    __table_args__ = (UniqueConstraint("checkpoint_id", "sequence", name="uq_patches_checkpoint_sequence"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True)
    org_id: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(Integer)
    script: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    strategy: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TemplateBuildRow(Base):
    """A template built from a Dockerfile, one per org and name (its root is under
    ``<data>/templates/<image>/``)."""

    __tablename__ = "template_builds"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_template_builds_org_name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(64), unique=True)
    org_id: Mapped[str] = mapped_column(String(64), index=True)
    tag: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    dockerfile: Mapped[str] = mapped_column(Text)
    digest: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ServiceBindingRow(Base):
    """A service binding of an org (``corral.domain.bindings``): the secret is kept as
    given, since corral adds it to requests (the store is private: docs/security.md)."""

    __tablename__ = "service_bindings"

    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    header: Mapped[str] = mapped_column(String(128))
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
