"""``registry/tables.py`` and the Alembic migrations describe the same schema, on SQLite and PostgreSQL:
Alembic's autogenerate comparison of the metadata against a database migrated to head finds nothing."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from modelyard.registry.tables import metadata


def test_autogenerate_finds_no_difference_between_tables_and_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(context, metadata)
    assert diff == [], diff


def test_every_table_carries_the_modelyard_prefix(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names()) - {"alembic_version"}
    assert names == set(metadata.tables) and all(n.startswith("modelyard_") for n in names), names
