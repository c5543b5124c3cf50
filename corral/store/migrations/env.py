"""Alembic environment: runs on a connection handed over by ``corral.store.database``."""

from __future__ import annotations

from alembic import context

from corral.store.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
