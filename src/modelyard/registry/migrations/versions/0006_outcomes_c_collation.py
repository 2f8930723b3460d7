"""Outcomes: the text columns of the unique key (model, request_id, route) compare bytewise (``COLLATE "C"``).

On PostgreSQL every insert into ``modelyard_outcomes`` and every probe of what is stored walks
``uq_outcome_request_row_route`` (and the matched rows' ``(model, predicted_at)`` index); under a database
collation other than C (``C.UTF-8``, ``en_US.UTF-8``: PostgreSQL calls ``strcoll`` for each comparison) those
comparisons were a sizeable part of joining outcomes (issue 16: the insert of a 50k chunk took about a fifth
longer than with bytewise keys). The columns hold identifiers, never sorted for people, and equality is the
same under every deterministic collation, so no result changes; the indexes on them are rebuilt (the table is
not rewritten). SQLite compares bytewise already: nothing to do there.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = (("model", 200), ("request_id", 100), ("route", 20))


def _alter(collation: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    changes = ", ".join(f'ALTER COLUMN {name} TYPE varchar({n}) COLLATE {collation}' for name, n in _COLUMNS)
    op.execute(f"ALTER TABLE modelyard_outcomes {changes}")


def upgrade() -> None:
    _alter('"C"')


def downgrade() -> None:
    _alter('"default"')
