"""Alembic environment: runs migrations on the engine handed over by ``stream.sql.db.upgrade``."""

from alembic import context

from stream.sql.db import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    context.run_migrations()
