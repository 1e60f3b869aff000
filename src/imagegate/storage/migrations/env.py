"""Alembic environment: always run programmatically by `Database.migrate()` on an open connection.

The caller passes its (already transactional) connection in ``config.attributes["connection"]``;
there is no alembic.ini and no URL here.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("imagegate migrations run through Database.migrate(), which supplies a connection")

context.configure(connection=connection, target_metadata=None, transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
