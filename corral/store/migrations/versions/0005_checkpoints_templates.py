"""checkpoints and their patches, Dockerfile templates, and what sandboxes need for
hibernation and forks (template digest, keepalive hold, source checkpoint, patch runs)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("template_digest", sa.String(128), nullable=True))
        batch.add_column(sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("checkpoint_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("patches", sa.JSON, nullable=True))
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("sandbox_id", sa.String(64), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_patch", sa.Integer, nullable=False),
        sa.UniqueConstraint("sandbox_id", "name", name="uq_checkpoints_sandbox_name"),
    )
    op.create_table(
        "checkpoint_patches",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "checkpoint_id",
            sa.String(64),
            sa.ForeignKey("checkpoints.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("script", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("checkpoint_id", "sequence", name="uq_patches_checkpoint_sequence"),
    )
    op.create_table(
        "template_builds",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dockerfile", sa.Text, nullable=False),
        sa.Column("digest", sa.String(128), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("template_builds")
    op.drop_table("checkpoint_patches")
    op.drop_table("checkpoints")
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("patches")
        batch.drop_column("checkpoint_id")
        batch.drop_column("hold_until")
        batch.drop_column("template_digest")
