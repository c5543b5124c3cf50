"""the store refuses UPDATE and DELETE of audit rows (the events table)

SQLite: BEFORE UPDATE and BEFORE DELETE triggers that RAISE(ABORT). PostgreSQL: one
trigger function raising for UPDATE and DELETE of a row, and for TRUNCATE of the table.
Appending is the only write left; a change to the trail needs a migration (or a DBA
dropping the triggers), which is the point.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MESSAGE = "audit records are append-only"

_SQLITE_UP = [
    f"""CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
    f"""CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END""",
]
_SQLITE_DOWN = ["DROP TRIGGER IF EXISTS events_no_update", "DROP TRIGGER IF EXISTS events_no_delete"]

_POSTGRES_UP = [
    f"""CREATE OR REPLACE FUNCTION corral_events_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege';
        END
        $$""",
    """CREATE TRIGGER events_no_change BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION corral_events_append_only()""",
    """CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION corral_events_append_only()""",
]
_POSTGRES_DOWN = [
    "DROP TRIGGER IF EXISTS events_no_truncate ON events",
    "DROP TRIGGER IF EXISTS events_no_change ON events",
    "DROP FUNCTION IF EXISTS corral_events_append_only()",
]


def _statements(up: bool) -> list[str]:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        return _SQLITE_UP if up else _SQLITE_DOWN
    if dialect == "postgresql":
        return _POSTGRES_UP if up else _POSTGRES_DOWN
    raise NotImplementedError(f"no append-only triggers for the {dialect} dialect")


def upgrade() -> None:
    for statement in _statements(up=True):
        op.execute(statement)


def downgrade() -> None:
    for statement in _statements(up=False):
        op.execute(statement)
