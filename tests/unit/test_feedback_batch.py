"""``modelyard feedback``'s work (``batch.feedback.feed``) on SQLite and PostgreSQL (joined in Python there, in
the database here): outcomes in a CSV joined by an entity key of the logged inputs within the window, resumable
by run id, a second run counted as duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from sklearn.tree import DecisionTreeRegressor

import modelyard
from modelyard.batch.feedback import feed
from modelyard.config import Settings
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.registry import Registry
from modelyard.registry.outcomes import SqlOutcomeStore


def test_feedback_from_a_file_joins_by_entity_key_and_resumes(tmp_path: Path, any_settings: Settings) -> None:
    settings = any_settings
    X = pd.DataFrame({"id": [1.0, 2.0, 3.0, 4.0], "x": [1.0, 2.0, 3.0, 4.0]})
    version = modelyard.publish("tiny", DecisionTreeRegressor().fit(X, [10.0, 20.0, 30.0, 40.0]), X,
                                pd.Series([10.0, 20.0, 30.0, 40.0]), alias="production", settings=settings)
    engine = Registry(settings).engine
    now = datetime.now(UTC)
    insert_records(engine, [PredictionRecord(f"r{i}", "tiny", version, "primary", [{"id": i, "x": float(i)}],
                                             [10.0 * i], ts=now - timedelta(hours=2)) for i in (1, 2, 3)])
    outcomes = tmp_path / "sold.csv"
    pd.DataFrame({"id": [1, 2, 3, 9], "price": [11.0, 19.0, 33.0, 5.0]}).to_csv(outcomes, index=False)

    done = feed("tiny", source=str(outcomes), key="id", actual="price", settings=settings, window=86400.0,
                late_after=3600.0, chunk_size=2, run_id="fb-1")
    r = done.result
    assert (r.received, r.matched, r.unmatched, r.late, done.rows_read) == (4, 3, 1, 3, 4)
    assert r.unmatched_ids == ["id=9"]
    stored = {row["request_id"]: row["actual"] for row in SqlOutcomeStore(engine).select("tiny")}
    assert stored == {"r1": 11.0, "r2": 19.0, "r3": 33.0}
    assert feed("tiny", source=str(outcomes), key="id", actual="price", settings=settings,
                run_id="fb-1").already_done
    again = feed("tiny", source=str(outcomes), key="id", actual="price", settings=settings, window=86400.0,
                 run_id="fb-2").result
    assert (again.matched, again.duplicate, again.unmatched) == (0, 3, 1)
