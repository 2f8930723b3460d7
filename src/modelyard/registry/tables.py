"""The database schema shared by the registry, the prediction log, batch runs, alerts and leases.

One metadata, one migration history (Alembic, under ``migrations/``): every server, batch job and stream
consumer that points at the same database sees the same registry and the same log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


def _bytewise(length: int) -> String:
    """A text key compared byte by byte on PostgreSQL (``COLLATE "C"``, migration 0006: a cheaper index walk than
    the database's collation; equality is the same); SQLite compares bytewise already."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


models = Table(
    "modelyard_models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("settings", JSON, nullable=True),
)

model_versions = Table(
    "modelyard_model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("modelyard_models.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # pending | ready
    Column("archive_sha256", String(64), nullable=True),
    Column("manifest_sha256", String(64), nullable=True),
    Column("manifest", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("created_by", String(200), nullable=True),
    UniqueConstraint("model_id", "version", name="uq_version_per_model"),
)

aliases = Table(
    "modelyard_aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("modelyard_models.id"), primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("weight", Float, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

events = Table(
    "modelyard_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_id", Integer, ForeignKey("modelyard_models.id"), nullable=False),
    Column("kind", String(40), nullable=False),  # publish | alias_set | alias_removed | weight | rollback
    Column("alias", String(100), nullable=True),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("actor", String(200), nullable=True),
    Column("reason", Text, nullable=True),
    Column("details", JSON, nullable=True),
    Column("at", DateTime(timezone=True), nullable=False, default=utcnow),
)

predictions = Table(
    "modelyard_predictions",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("request_id", String(100), nullable=False),
    Column("route", String(20), nullable=False),  # primary | canary | shadow | batch | stream
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("inputs", JSON, nullable=True),
    Column("outputs", JSON, nullable=True),
    Column("n_rows", Integer, nullable=False, default=1),
    Column("latency_ms", Float, nullable=True),
    Column("error", Text, nullable=True),
    Column("meta", JSON, nullable=True),
    UniqueConstraint("request_id", "route", name="uq_prediction_request_route"),
    Index("ix_predictions_model_ts", "model", "ts"),
)

batch_runs = Table(
    "modelyard_batch_runs",
    metadata,
    Column("run_id", String(100), primary_key=True),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("target", String(200), nullable=False),
    Column("row_count", BigInteger, nullable=True),
    Column("rows_scored", BigInteger, nullable=False, default=0),
    Column("rows_rejected", BigInteger, nullable=False, default=0),
    Column("status", String(20), nullable=False),  # running | done | failed
    Column("started_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("details", JSON, nullable=True),
)

alerts = Table(
    "modelyard_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(200), nullable=False),
    Column("version", Integer, nullable=True),
    Column("rule", String(100), nullable=False),
    Column("status", String(20), nullable=False),  # firing | resolved
    Column("value", Float, nullable=True),
    Column("threshold", Float, nullable=True),
    Column("message", Text, nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("details", JSON, nullable=True),
)

leases = Table(
    "modelyard_leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

instances = Table(
    "modelyard_instances",
    metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("kind", String(20), nullable=False),  # server | stream | batch
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("region", String(100), nullable=True),
    Column("zone", String(100), nullable=True),
    Column("serving", JSON, nullable=True),  # [{"model", "alias", "version", "weight"}]
    Column("status", String(20), nullable=False),  # running | stopped
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
    Column("details", JSON, nullable=True),
    Index("ix_instances_last_seen", "last_seen"),
)

outcomes = Table(
    "modelyard_outcomes",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("model", _bytewise(200), nullable=False),
    Column("request_id", _bytewise(100), nullable=False),  # unmatched: the id (or entity key) the outcome named
    Column("row", Integer, nullable=False),
    Column("route", _bytewise(20), nullable=False),  # the logged record's route; "unmatched" when none
    Column("version", Integer, nullable=True),
    Column("predicted_at", DateTime(timezone=True), nullable=True),
    Column("predicted", JSON, nullable=True),
    Column("probabilities", JSON, nullable=True),
    Column("actual", JSON, nullable=True),
    Column("observed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("source", String(20), nullable=False),  # http | sql | stream
    Column("matched", Boolean, nullable=False),
    Column("late", Boolean, nullable=False, default=False),
    UniqueConstraint("model", "request_id", "row", "route", name="uq_outcome_request_row_route"),
    # matched rows only: the live-quality reads say ``matched``, the join's probes never do (migration 0005)
    Index("ix_outcomes_matched_model_predicted_at", "model", "predicted_at",
          postgresql_where=text("matched"), sqlite_where=text("matched")),
)
