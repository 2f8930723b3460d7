"""Outcomes: the live-quality index covers matched rows only (``WHERE matched``).

``ix_outcomes_model_predicted_at`` on every row let a join planned while the table looked empty (a new table,
or one another join was filling at that moment) probe for stored outcomes by ``model`` alone: each probe read
every outcome of the model, and two 50k-row joins at once ran for minutes. The reads it serves (live
quality: matched rows of a model by prediction time) all say ``matched``; the probes never do, so they can
only take the unique index now. Unmatched rows are no longer indexed by time.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_outcomes_model_predicted_at", table_name="modelyard_outcomes")
    op.create_index("ix_outcomes_matched_model_predicted_at", "modelyard_outcomes", ["model", "predicted_at"],
                    postgresql_where=sa.text("matched"), sqlite_where=sa.text("matched"))


def downgrade() -> None:
    op.drop_index("ix_outcomes_matched_model_predicted_at", table_name="modelyard_outcomes")
    op.create_index("ix_outcomes_model_predicted_at", "modelyard_outcomes", ["model", "predicted_at"])
