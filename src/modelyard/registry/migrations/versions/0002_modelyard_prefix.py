"""Rename every table from the ``my_`` prefix to ``modelyard_``, with the names derived from them.

On PostgreSQL the primary keys, unique and foreign-key constraints and sequences PostgreSQL named after the
table (``my_models_pkey``, ``my_models_name_key``, ``my_aliases_model_id_fkey``, ``my_models_id_seq``) are
renamed too; SQLite rewrites the foreign keys that point at a renamed table itself. Named constraints and
indexes (``uq_version_per_model``, ``ix_predictions_model_ts``...) carry no prefix and keep their names.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("models", "model_versions", "aliases", "events", "predictions", "batch_runs", "alerts", "leases")


def _rename(old_prefix: str, new_prefix: str) -> None:
    bind = op.get_bind()
    for table in TABLES:
        op.rename_table(old_prefix + table, new_prefix + table)
    if bind.dialect.name != "postgresql":
        return
    for table in TABLES:
        new = new_prefix + table
        constraints = bind.execute(
            sa.text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:t AS regclass)"), {"t": new}
        ).scalars().all()
        for name in constraints:
            if name.startswith(old_prefix + table):
                renamed = new_prefix + name[len(old_prefix):]
                op.execute(f'ALTER TABLE "{new}" RENAME CONSTRAINT "{name}" TO "{renamed}"')
        sequences = bind.execute(
            sa.text(
                "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
                "WHERE s.relkind = 'S' AND d.refobjid = CAST(:t AS regclass)"
            ),
            {"t": new},
        ).scalars().all()
        for name in sequences:
            if name.startswith(old_prefix + table):
                op.execute(f'ALTER SEQUENCE "{name}" RENAME TO "{new_prefix + name[len(old_prefix):]}"')


def upgrade() -> None:
    _rename("my_", "modelyard_")


def downgrade() -> None:
    _rename("modelyard_", "my_")
