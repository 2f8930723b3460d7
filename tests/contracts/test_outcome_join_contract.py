"""Outcomes joined to logged predictions, on SQLite and PostgreSQL: by request id and row, by entity key
and time window, duplicates and unmatched outcomes counted, wrong types and unknown ids refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from modelyard.errors import OutcomeError, UnknownRequestError
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.predlog.outcomes import Outcome, join_outcomes
from modelyard.registry.outcomes import SqlOutcomeStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _task(model: str, version: int) -> tuple[str, list[object] | None]:
    return ("regression", None) if model == "houses" else ("classification", ["no", "yes"])


def _log(engine: Engine) -> None:
    insert_records(engine, [
        PredictionRecord("r1", "houses", 1, "primary", [{"id": 7, "x": 1.0}, {"id": 8, "x": 2.0}], [100.0, 200.0],
                         n_rows=2, ts=T0),
        PredictionRecord("r1", "houses", 2, "shadow", [{"id": 7, "x": 1.0}, {"id": 8, "x": 2.0}], [110.0, 190.0],
                         n_rows=2, ts=T0),
        PredictionRecord("r2", "houses", 1, "primary", [{"id": 7, "x": 1.5}], [150.0], ts=T0 + timedelta(minutes=30)),
        PredictionRecord("r3", "houses", 1, "primary", [{"id": 9}], None, error="boom", ts=T0),
    ])


def test_outcomes_by_request_id_are_stored_per_logged_record_and_counted(engine: Engine) -> None:
    _log(engine)
    now = T0 + timedelta(hours=2)
    got = join_outcomes(engine, [Outcome(120.0, "r1", 0), Outcome(180.0, "r1", 1), Outcome(1.0, "nope")],
                        model="houses", source="sql", task_of=_task, now=now)
    assert (got.received, got.matched, got.unmatched, got.duplicate) == (3, 2, 1, 0)
    assert got.unmatched_ids == ["nope"] and got.rows_stored == 5  # 2 rows x (primary, shadow) + 1 unmatched
    again = join_outcomes(engine, [Outcome(120.0, "r1", 0), Outcome(120.0, "r1", 0)], model="houses", now=now)
    assert (again.matched, again.duplicate, again.rows_stored) == (0, 2, 0)
    rows = SqlOutcomeStore(engine).select("houses", routes=["primary"])
    assert [(r["row"], r["predicted"], r["actual"], r["version"]) for r in rows] == [(0, 100.0, 120.0, 1),
                                                                                     (1, 200.0, 180.0, 1)]
    counts = SqlOutcomeStore(engine).counts("houses")
    assert (counts.matched, counts.unmatched) == (4, 1)


def test_an_outcome_long_after_its_prediction_is_counted_late_and_kept(engine: Engine) -> None:
    _log(engine)
    got = join_outcomes(engine, [Outcome(160.0, "r2")], model="houses", late_after=60, now=T0 + timedelta(hours=1))
    assert (got.matched, got.late) == (1, 1)
    assert SqlOutcomeStore(engine).counts("houses").late == 1


def test_outcomes_by_entity_key_take_the_latest_prediction_within_the_window(engine: Engine) -> None:
    _log(engine)
    got = join_outcomes(engine, [Outcome(155.0, key={"id": 7}, at=T0 + timedelta(minutes=40)),
                                 Outcome(105.0, key={"id": 7}, at=T0 + timedelta(minutes=10)),
                                 Outcome(1.0, key={"id": 7}, at=T0 + timedelta(hours=5))],
                        model="houses", window=3600, task_of=_task, now=T0 + timedelta(hours=6))
    assert (got.matched, got.unmatched) == (2, 1)
    rows = {(r["request_id"], r["row"]): r["actual"]
            for r in SqlOutcomeStore(engine).select("houses", routes=["primary"])}
    assert rows == {("r2", 0): 155.0, ("r1", 0): 105.0}


@pytest.mark.parametrize("actual", ["expensive", None, True, [1.0], float("inf")])
def test_strict_join_refuses_a_wrong_type_and_stores_nothing(engine: Engine, actual: object) -> None:
    _log(engine)
    with pytest.raises(OutcomeError) as info:
        join_outcomes(engine, [Outcome(1.0, "r2"), Outcome(actual, "r1", 1)], strict=True, task_of=_task)
    assert info.value.context == {"field": "actual", "row": 1}
    assert SqlOutcomeStore(engine).select("houses") == []


def test_strict_join_names_the_unknown_request_id_a_failed_request_or_a_missing_row(engine: Engine) -> None:
    _log(engine)
    for outcome in (Outcome(1.0, "ghost"), Outcome(1.0, "r3"), Outcome(1.0, "r2", 5)):
        with pytest.raises(UnknownRequestError) as info:
            join_outcomes(engine, [Outcome(1.0, "r2"), outcome], strict=True, task_of=_task)
        assert info.value.context["row"] == 1 and str(outcome.request_id) in info.value.message
