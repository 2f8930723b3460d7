"""Every batch run in the registry's ``my_batch_runs``: which model version scored which query into which
table, how many rows, when, and how it ended, so a prediction in an output table traces back to both.

A run id seen before is a resume: it keeps the version it started with (an alias may have moved since) and
must name the same source and target; a finished run is not scored again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert, select, update

from modelyard.errors import BatchError
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


def get_run(engine: Engine, run_id: str) -> RunRecord | None:
    with engine.connect() as conn:
        row = conn.execute(select(batch_runs).where(batch_runs.c.run_id == run_id)).mappings().first()
    if row is None:
        return None
    return RunRecord(
        run_id=row["run_id"], model=row["model"], version=int(row["version"]), source=row["source"],
        target=row["target"], status=row["status"], row_count=row["row_count"],
        rows_scored=int(row["rows_scored"] or 0), rows_rejected=int(row["rows_rejected"] or 0),
        details=dict(row["details"] or {}),
    )


def open_run(engine: Engine, run_id: str, *, model: str, version: int | None, source: str, target: str,
             details: dict[str, Any]) -> RunRecord:
    """Start ``run_id``, or take it up again where it stopped. ``version`` None means: the run's own."""
    existing = get_run(engine, run_id)
    if existing is None:
        if version is None:
            raise BatchError(f"run '{run_id}' has no model version to start with")
        details = {**details, "attempts": 1}
        with engine.begin() as conn:
            conn.execute(insert(batch_runs).values(
                run_id=run_id, model=model, version=version, source=source, target=target, row_count=None,
                rows_scored=0, rows_rejected=0, status="running", started_at=utcnow(), details=details))
        return RunRecord(run_id, model, version, source, target, "running", None, 0, 0, details)
    for what, was, now in (("model", existing.model, model), ("source", existing.source, source),
                           ("target table", existing.target, target)):
        if was != now:
            raise BatchError(f"run '{run_id}' was started with {what} {was!r}, not {now!r}: "
                             "resume it with the same arguments or choose a new --run-id")
    existing.resumed = True
    if existing.status == "done":
        return existing
    existing.details = {**existing.details, **details,
                        "attempts": int(existing.details.get("attempts", 1)) + 1}
    with engine.begin() as conn:
        conn.execute(update(batch_runs).where(batch_runs.c.run_id == run_id)
                     .values(status="running", finished_at=None, details=existing.details))
    existing.status = "running"
    return existing


def record_progress(engine: Engine, run: RunRecord, *, scored: int, rejected: int,
                    row_count: int | None = None, status: str | None = None,
                    details: dict[str, Any] | None = None) -> None:
    """Counts (and, at the end, the status) of ``run``; the output tables stay the truth for resuming."""
    values: dict[str, Any] = {"rows_scored": scored, "rows_rejected": rejected}
    run.rows_scored, run.rows_rejected = scored, rejected
    if row_count is not None:
        values["row_count"] = run.row_count = row_count
    if details:
        run.details = {**run.details, **details}
        values["details"] = run.details
    if status is not None:
        values["status"] = run.status = status
        if status in {"done", "failed"}:
            values["finished_at"] = utcnow()
    with engine.begin() as conn:
        conn.execute(update(batch_runs).where(batch_runs.c.run_id == run.run_id).values(**values))
