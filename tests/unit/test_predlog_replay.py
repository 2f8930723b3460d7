"""Replay recomputes a logged prediction with the exact stored version and says whether it matches; the
query helpers parse ``--since`` and find a request's records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

import modelyard
from modelyard.config import Settings
from modelyard.errors import BadRequestError, NotFoundError
from modelyard.predlog import PredictionRecord, find_request, insert_records, parse_since, replay
from modelyard.registry import Registry


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})


def _record(rid: str, model: modelyard.Model, rows: list[dict], **extra: object) -> PredictionRecord:
    return PredictionRecord(request_id=rid, model=model.name, version=int(model.version or 0), inputs=rows,
                            outputs=model.predict(rows).tolist(), n_rows=len(rows), **extra)  # type: ignore[arg-type]


def test_replay_matches_then_reports_a_changed_output(sqlite_settings: Settings, frame: pd.DataFrame) -> None:
    y = 3 * frame["a"] - frame["b"]
    modelyard.publish("lin", LinearRegression().fit(frame, y), frame, y, alias="production",
                      settings=sqlite_settings)
    model = modelyard.load("lin", settings=sqlite_settings)
    rows = frame.head(5).to_dict("records")
    registry = Registry(sqlite_settings)
    record = _record("req-1", model, rows)
    result = replay(registry, record)
    assert result.matches and result.summary.startswith("match:") and result.replayed == record.outputs
    record.outputs = [*record.outputs[:3], record.outputs[3] + 0.5, record.outputs[4]]
    result = replay(registry, record)
    assert not result.matches and "MISMATCH" in result.summary
    (diff,) = result.differences
    assert diff.row == 3 and diff.abs_diff == pytest.approx(0.5)


def test_replay_uses_the_stored_version_not_the_current_alias(
    sqlite_settings: Settings, frame: pd.DataFrame
) -> None:
    y = frame["a"] + 1
    modelyard.publish("lin", LinearRegression().fit(frame, y), frame, y, alias="production",
                      settings=sqlite_settings)
    v1 = modelyard.load("lin@1", settings=sqlite_settings)
    modelyard.publish("lin", LinearRegression().fit(frame, y * 10), frame, y * 10, alias="production",
                      settings=sqlite_settings)
    rows = frame.head(3).to_dict("records")
    assert replay(Registry(sqlite_settings), _record("old", v1, rows)).matches


def test_replay_compares_probabilities_of_classifiers(sqlite_settings: Settings, frame: pd.DataFrame) -> None:
    y = np.where(frame["a"] > 0, "yes", "no")
    modelyard.publish("clf", LogisticRegression().fit(frame, y), frame, pd.Series(y, name="t"),
                      alias="production", settings=sqlite_settings)
    model = modelyard.load("clf", settings=sqlite_settings)
    rows = frame.head(4).to_dict("records")
    proba = model.predict_proba(rows).tolist()
    record = _record("p", model, rows, meta={"probabilities": proba})
    assert replay(Registry(sqlite_settings), record).matches
    record.meta = {"probabilities": [[p[0] + 0.1, p[1] - 0.1] for p in proba]}
    result = replay(Registry(sqlite_settings), record)
    assert not result.matches and result.probabilities_match is False


def test_a_logged_failure_matches_when_it_still_fails(sqlite_settings: Settings, frame: pd.DataFrame) -> None:
    y = frame["a"]
    modelyard.publish("lin", LinearRegression().fit(frame, y), frame, y, alias="production",
                      settings=sqlite_settings)
    bad = PredictionRecord(request_id="bad", model="lin", version=1, inputs=[{"a": 1.0}], outputs=None,
                           error="schema_error: row 0 is missing column 'b'")
    result = replay(Registry(sqlite_settings), bad)
    assert result.matches and "missing column 'b'" in (result.replayed_error or "")


def test_find_request_returns_primary_first_and_names_a_missing_id(sqlite_settings: Settings) -> None:
    engine = Registry(sqlite_settings).engine
    insert_records(engine, [PredictionRecord("x", "m", 2, route="shadow"), PredictionRecord("x", "m", 1)])
    assert [r.route for r in find_request(engine, "x")] == ["primary", "shadow"]
    with pytest.raises(NotFoundError, match="no prediction with request id 'nope'"):
        find_request(engine, "nope")


@pytest.mark.parametrize(("text", "delta"), [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 7 * 86400),
                                             ("1.5h", 5400)])
def test_parse_since_durations(text: str, delta: float) -> None:
    now = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_since(text, now=now) == now - timedelta(seconds=delta)


def test_parse_since_dates_and_nonsense() -> None:
    assert parse_since("2024-05-01T10:00") == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_since("2024-05-01").tzinfo is not None
    with pytest.raises(BadRequestError, match="expected a duration"):
        parse_since("yesterday-ish")
