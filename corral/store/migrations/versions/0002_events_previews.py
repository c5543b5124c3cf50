"""events (append-only), preview URLs, egress policy and preview token of sandboxes

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sandboxes") as batch:
        batch.add_column(sa.Column("egress", sa.JSON, nullable=True))
        batch.add_column(sa.Column("preview_token_hash", sa.String(128), nullable=True))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("sandbox_id", sa.String(64), nullable=True, index=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("client_id", sa.String(256), nullable=True),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "previews",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("sandbox_id", sa.String(64), sa.ForeignKey("sandboxes.id"), nullable=False, index=True),
        sa.Column("org_id", sa.String(64), nullable=False, index=True),
        sa.Column("port", sa.Integer, nullable=False),
        sa.Column("public", sa.Boolean, nullable=False),
        sa.Column("domain", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("sandbox_id", "port", name="uq_previews_sandbox_port"),
    )


def downgrade() -> None:
    op.drop_table("previews")
    op.drop_table("events")
    with op.batch_alter_table("sandboxes") as batch:
        batch.drop_column("preview_token_hash")
        batch.drop_column("egress")
