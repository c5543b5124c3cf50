"""service bindings: per org, an upstream base URL and the header and secret corral
adds to the requests its sandboxes send there

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_bindings",
        sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.id"), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("header", sa.String(128), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("service_bindings")
