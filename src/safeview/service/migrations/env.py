"""Alembic environment of the SafeView service: runs on the connection that ``db.migrate`` hands
over (``alembic upgrade`` from the command line is not needed; ``safeview serve`` migrates)."""

from alembic import context

from safeview.service.db import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
