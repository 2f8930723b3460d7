"""``modelyard feedback``: outcomes that land in a database (or a file) later, joined to logged predictions.

The source is read in chunks by ``batch.source`` (the same reader ``score`` uses), ordered by ``--key``, so
a run stopped half way resumes where it stopped (``--run-id``, the progress is recorded in
``modelyard_batch_runs`` as for ``score``); joining is idempotent, so rows read twice are counted as
duplicates, never stored twice. Each row's ``--key`` value names its prediction:

- by default, an entity key: an input column of the logged rows with that name and value, the latest
  prediction within ``--window`` before the outcome's time (``--at`` column, or now);
- with ``--request-ids``, the key column holds request ids (and ``--row`` the row of the request);
- with ``--batch-run RUN``, the key of a row scored by ``modelyard score`` in run RUN: request id
  ``RUN:key`` when the run logged its rows (``--log-rows``), else the run's output table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from sqlalchemy import MetaData, Table, select

from modelyard.batch.runner import new_run_id, user_engine
from modelyard.batch.runs import get_run, open_run, record_progress
from modelyard.batch.source import Source
from modelyard.config import Settings, normalize_database_url
from modelyard.errors import BatchError
from modelyard.predlog.outcomes import (
    DEFAULT_LATE_AFTER,
    JoinResult,
    Outcome,
    join_chunks,
    key_text,
    task_of_registry,
)
from modelyard.registry import Registry
from modelyard.registry.db import Engine
from modelyard.registry.predictions import PredictionRow, SqlPredictionStore
from modelyard.registry.userdb import redact

__all__ = ["FeedbackRun", "feed"]

TARGET = "modelyard_outcomes"


@dataclass
class FeedbackRun:
    run_id: str
    model: str
    result: JoinResult = field(default_factory=JoinResult)
    rows_read: int = 0
    seconds: float = 0.0
    resumed: bool = False
    already_done: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def _value(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def _at(v: Any) -> datetime | None:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return None
    ts = pd.Timestamp(v)
    aware: datetime = (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()
    return aware


def run_table_answers(engine: Engine, registry_engine: Engine,
                      run_id: str) -> Callable[[list[str]], list[PredictionRow]]:
    """Answers for request ids ``RUN:key``: the logged rows when the run logged them, else its output table."""
    run = get_run(registry_engine, run_id)
    if run is None:
        raise BatchError(f"no batch run '{run_id}' in the registry (see the run id `modelyard score` printed)")
    log = SqlPredictionStore(registry_engine)
    table = Table(run.target, MetaData(), autoload_with=engine)
    prefix = f"{run_id}:"

    def answers(request_ids: list[str]) -> list[PredictionRow]:
        found = log.answers(request_ids)
        missing = sorted(set(request_ids) - {str(r["request_id"]) for r in found})
        keys = [rid[len(prefix):] for rid in missing if rid.startswith(prefix)]
        if not keys:
            return found
        typed: list[Any] = keys
        if table.c.key.type.python_type is int:
            typed = [int(k) for k in keys if k.lstrip("-").isdigit()]
        with engine.connect() as conn:
            for i in range(0, len(typed), 5000):
                query = select(table.c.key, table.c.prediction, table.c.version, table.c.scored_at).where(
                    table.c.run_id == run_id, table.c.key.in_(typed[i:i + 5000]))
                for key, prediction, version, scored_at in conn.execute(query):
                    ts = scored_at if scored_at.tzinfo else scored_at.replace(tzinfo=UTC)
                    found.append({"request_id": f"{prefix}{key}", "route": "batch", "model": run.model,
                                  "version": int(version), "ts": ts, "outputs": [prediction], "meta": None,
                                  "error": None})
        return found

    return answers


def feed(name: str, *, source: str, key: str, actual: str, settings: Settings, db: str | None = None,
         at: str | None = None, row: str | None = None, request_ids: bool = False, batch_run: str | None = None,
         window: float = 7 * 86400.0, late_after: float = DEFAULT_LATE_AFTER, chunk_size: int = 50_000,
         run_id: str | None = None, progress: Callable[[int, int | None], None] | None = None) -> FeedbackRun:
    """Join the outcomes of ``source`` (``key`` and ``actual`` columns) to ``name``'s logged predictions."""
    registry = Registry(settings)
    if name not in registry.models():
        raise BatchError(f"no model '{name}' in the registry")
    src = Source.parse(source)
    db_url = normalize_database_url(db or settings.resolved_database_url)
    engine = user_engine(db_url, settings)
    run_id = run_id or new_run_id(f"{name}-feedback")
    run = open_run(registry.engine, run_id, model=name, version=0, source=src.value, target=TARGET,
                   details={"kind": "feedback", "db": redact(db_url), "key": key, "actual": actual,
                            "batch_run": batch_run, "request_ids": request_ids})
    out = FeedbackRun(run_id, name, resumed=run.resumed)
    if run.status == "done":
        out.already_done = True
        return out
    started = time.perf_counter()
    reading = engine if src.kind != "file" else None
    if reading is not None:
        src.check_key(reading, key)
    answers = run_table_answers(engine, registry.engine, batch_run) if batch_run else None
    task_of = task_of_registry(registry)
    base_scored, base_rejected = run.rows_scored, run.rows_rejected
    skip = base_scored + base_rejected
    total = src.count(reading)
    out.rows_read = skip

    def chunks() -> Iterator[tuple[list[Outcome], int]]:
        for frame in src.chunks(reading, chunk_size, key=key, skip=skip):
            for col in (key, actual, at, row):
                if col is not None and col not in frame.columns:
                    raise BatchError(f"the column '{col}' is not in the input (columns: "
                                     f"{', '.join(map(str, frame.columns))})")
            yield _outcomes(frame, key, actual, at, row, by_request=request_ids or batch_run is not None,
                            prefix=f"{batch_run}:" if batch_run else ""), len(frame)

    try:
        # read ahead while the database joins: two chunks at once on PostgreSQL, progress in input order
        for got, n_rows in join_chunks(registry.engine, chunks(), model=name, source="sql", window=window,
                                       late_after=late_after, task_of=task_of, answers=answers):
            out.result.add(got)
            out.rows_read += n_rows
            record_progress(registry.engine, run, scored=base_scored + out.result.matched + out.result.duplicate,
                            rejected=base_rejected + out.result.unmatched, row_count=total)
            if progress:
                progress(out.rows_read, total)
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0][:500]
        record_progress(registry.engine, run, scored=run.rows_scored, rejected=run.rows_rejected,
                        status="failed", details={"error": reason})
        raise
    out.seconds = time.perf_counter() - started
    record_progress(registry.engine, run, scored=run.rows_scored, rejected=run.rows_rejected, status="done",
                    details={"outcomes": out.result.to_dict(), "seconds": round(out.seconds, 3)})
    return out


def _outcomes(frame: pd.DataFrame, key: str, actual: str, at: str | None, row: str | None, *, by_request: bool,
              prefix: str) -> list[Outcome]:
    keys = frame[key].tolist()
    actuals = [_value(v) for v in frame[actual].tolist()]
    times = [_at(v) for v in frame[at].tolist()] if at else [None] * len(keys)
    rows = [int(v) for v in frame[row].tolist()] if row else [0] * len(keys)
    if by_request:
        return [Outcome(a, prefix + key_text(_value(k)), r, None, t)
                for k, a, r, t in zip(keys, actuals, rows, times, strict=True)]
    return [Outcome(a, None, 0, {key: _value(k)}, t) for k, a, t in zip(keys, actuals, times, strict=True)]
