"""Read and write prediction records in the registry's database.

Writes are idempotent on (request_id, route): a batch replayed from the spill file after an outage, or a
redelivered stream message, never produces a second record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelyard.predlog.records import PredictionRecord
from modelyard.registry.tables import predictions


def insert_records(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Insert records, skipping any (request_id, route) already stored; return how many were sent."""
    if not records:
        return 0
    rows = [r.to_row() for r in records]
    dialect = engine.dialect.name
    if dialect == "postgresql":
        stmt: Any = pg_insert(predictions).on_conflict_do_nothing(constraint="uq_prediction_request_route")
    elif dialect == "sqlite":
        stmt = sqlite_insert(predictions).on_conflict_do_nothing()
    else:
        stmt = predictions.insert().prefix_with("IGNORE")
    with engine.begin() as conn:
        conn.execute(stmt, rows)
    return len(rows)


def _record(row: Any) -> PredictionRecord:
    return PredictionRecord(
        request_id=row["request_id"], model=row["model"], version=int(row["version"]), route=row["route"],
        inputs=row["inputs"], outputs=row["outputs"], n_rows=int(row["n_rows"] or 0),
        latency_ms=row["latency_ms"], error=row["error"], meta=row["meta"], ts=row["ts"],
    )


def get_records(engine: Engine, request_id: str) -> list[PredictionRecord]:
    """Every record of one request (the primary and, if any, its shadow and canary)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(predictions).where(predictions.c.request_id == request_id).order_by(predictions.c.id)
        ).mappings()
        return [_record(r) for r in rows]


def list_records(
    engine: Engine,
    model: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    route: str | None = None,
    version: int | None = None,
    limit: int | None = 100,
) -> list[PredictionRecord]:
    query = select(predictions).order_by(predictions.c.id.desc())
    if model is not None:
        query = query.where(predictions.c.model == model)
    if since is not None:
        query = query.where(predictions.c.ts >= since)
    if until is not None:
        query = query.where(predictions.c.ts < until)
    if route is not None:
        query = query.where(predictions.c.route == route)
    if version is not None:
        query = query.where(predictions.c.version == version)
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_record(r) for r in conn.execute(query).mappings()]
