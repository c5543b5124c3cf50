"""Dockerfile templates are their org's: one row per (org, name), keyed by the template
id, with ``image``, the template's name in the node's catalog. Rows made before are
kept: their ``image`` is their name (where their builds already are), so they work as
before for the org that built them, and for it alone.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COMMON = ("org_id", "tag", "status", "dockerfile", "digest", "error", "created_at")


def _columns() -> list[sa.Column[object]]:
    return [
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("tag", sa.String(128), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("dockerfile", sa.Text, nullable=False),
        sa.Column("digest", sa.String(128), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "template_builds_by_org",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("image", sa.String(64), nullable=False, unique=True),
        *_columns(),
        sa.UniqueConstraint("org_id", "name", name="uq_template_builds_org_name"),
    )
    common = ", ".join(_COMMON)
    op.execute(
        f"INSERT INTO template_builds_by_org (id, name, image, {common}) "
        f"SELECT id, name, name, {common} FROM template_builds"
    )
    op.drop_table("template_builds")
    op.rename_table("template_builds_by_org", "template_builds")
    op.create_index("ix_template_builds_org_id", "template_builds", ["org_id"])


def downgrade() -> None:
    """Back to one namespace per server: fails if two orgs have a template of one name."""
    op.create_table(
        "template_builds_by_name",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        *_columns(),
    )
    common = ", ".join(_COMMON)
    op.execute(
        f"INSERT INTO template_builds_by_name (name, id, {common}) SELECT name, id, {common} FROM template_builds"
    )
    op.drop_index("ix_template_builds_org_id", "template_builds")
    op.drop_table("template_builds")
    op.rename_table("template_builds_by_name", "template_builds")
    op.create_index("ix_template_builds_org_id", "template_builds", ["org_id"])
