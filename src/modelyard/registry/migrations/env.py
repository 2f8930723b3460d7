"""Alembic environment: run with the connection modelyard hands over (see ``registry.db.migrate``)."""

from __future__ import annotations

from alembic import context

from modelyard.registry.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # plain `alembic` command line use
    from sqlalchemy import create_engine

    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: set sqlalchemy.url to the database to migrate")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
