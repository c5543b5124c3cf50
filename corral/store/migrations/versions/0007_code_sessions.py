"""code sessions (the Enclave surface, spec 001): one row per session, listed newest
first by ``seq``

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "code_sessions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("limits", sa.JSON, nullable=False),
        sa.Column("egress", sa.JSON, nullable=False),
        sa.Column("labels", sa.JSON, nullable=False),
        sa.Column("bindings", sa.JSON, nullable=False),
        sa.Column("webhook_url", sa.Text, nullable=True),
        sa.Column("sandbox_id", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("kill_reason", sa.String(32), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_code_sessions_org_id", "code_sessions", ["org_id"])
    op.create_index("ix_code_sessions_phase", "code_sessions", ["phase"])


def downgrade() -> None:
    op.drop_index("ix_code_sessions_phase", "code_sessions")
    op.drop_index("ix_code_sessions_org_id", "code_sessions")
    op.drop_table("code_sessions")
