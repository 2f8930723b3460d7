"""Prediction records in and out of the registry's log table (the SQL is in ``registry.predictions``).

Writes are idempotent on (request_id, route): a batch replayed from the spill file after an outage, or a
redelivered stream message, never produces a second record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from modelyard.predlog.records import PredictionRecord
from modelyard.registry.db import Engine
from modelyard.registry.predictions import SqlPredictionStore


def insert_records(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Insert records, skipping any (request_id, route) already stored; return how many were sent."""
    return SqlPredictionStore(engine).insert([r.to_row() for r in records])


def _record(row: dict[str, Any]) -> PredictionRecord:
    return PredictionRecord(**row)


def get_records(engine: Engine, request_id: str) -> list[PredictionRecord]:
    """Every record of one request (the primary and, if any, its shadow and canary)."""
    return [_record(r) for r in SqlPredictionStore(engine).by_request(request_id)]


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
    """Records newest first, ``since <= ts < until``."""
    rows = SqlPredictionStore(engine).select(model, since=since, until=until, route=route, version=version,
                                             limit=limit)
    return [_record(r) for r in rows]
