"""Batch runs, ``modelyard_batch_runs``: which model version scored which input into which table, how many
rows, when, and how it ended. The resume rules (same source and target, a finished run is not scored again)
are ``batch.runs``; this store reads and writes the rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine, insert, select, update

from modelyard.registry.tables import batch_runs, utcnow


@dataclass
class RunRecord:
    run_id: str
    model: str
    version: int
    source: str
    target: str
    status: str
    row_count: int | None
    rows_scored: int
    rows_rejected: int
    details: dict[str, Any]
    resumed: bool = False


@runtime_checkable
class BatchRunStore(Protocol):
    def get(self, run_id: str) -> RunRecord | None: ...

    def create(self, run: RunRecord) -> None: ...

    def update(self, run_id: str, values: Mapping[str, Any]) -> None: ...


class SqlBatchRunStore:
    """``update`` takes column values (``status``, ``rows_scored``, ``details``, ...); setting ``status`` to
    done or failed stamps ``finished_at``, setting it to running clears it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, run_id: str) -> RunRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(batch_runs).where(batch_runs.c.run_id == run_id)).mappings().first()
        if row is None:
            return None
        return RunRecord(
            run_id=row["run_id"], model=row["model"], version=int(row["version"]), source=row["source"],
            target=row["target"], status=row["status"], row_count=row["row_count"],
            rows_scored=int(row["rows_scored"] or 0), rows_rejected=int(row["rows_rejected"] or 0),
            details=dict(row["details"] or {}),
        )

    def create(self, run: RunRecord) -> None:
        """Insert a new run (an existing run id is an ``IntegrityError`` of the database)."""
        with self.engine.begin() as conn:
            conn.execute(insert(batch_runs).values(
                run_id=run.run_id, model=run.model, version=run.version, source=run.source, target=run.target,
                row_count=run.row_count, rows_scored=run.rows_scored, rows_rejected=run.rows_rejected,
                status=run.status, started_at=utcnow(), details=run.details))

    def update(self, run_id: str, values: Mapping[str, Any]) -> None:
        values = dict(values)
        if values.get("status") in {"done", "failed"}:
            values["finished_at"] = utcnow()
        elif values.get("status") == "running":
            values["finished_at"] = None
        with self.engine.begin() as conn:
            conn.execute(update(batch_runs).where(batch_runs.c.run_id == run_id).values(**values))
