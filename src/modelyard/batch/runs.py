"""Every batch run in the registry's ``modelyard_batch_runs``: which model version scored which query into which
table, how many rows, when, and how it ended, so a prediction in an output table traces back to both.

A run id seen before is a resume: it keeps the version it started with (an alias may have moved since) and
must name the same source and target; a finished run is not scored again.
"""

from __future__ import annotations

from typing import Any

from modelyard.errors import BatchError
from modelyard.registry.batch_runs import RunRecord, SqlBatchRunStore
from modelyard.registry.db import Engine

__all__ = ["RunRecord", "get_run", "open_run", "record_progress"]


def get_run(engine: Engine, run_id: str) -> RunRecord | None:
    return SqlBatchRunStore(engine).get(run_id)


def open_run(engine: Engine, run_id: str, *, model: str, version: int | None, source: str, target: str,
             details: dict[str, Any]) -> RunRecord:
    """Start ``run_id``, or take it up again where it stopped. ``version`` None means: the run's own."""
    store = SqlBatchRunStore(engine)
    existing = store.get(run_id)
    if existing is None:
        if version is None:
            raise BatchError(f"run '{run_id}' has no model version to start with")
        run = RunRecord(run_id, model, version, source, target, "running", None, 0, 0, {**details, "attempts": 1})
        store.create(run)
        return run
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
    store.update(run_id, {"status": "running", "details": existing.details})
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
    SqlBatchRunStore(engine).update(run.run_id, values)
