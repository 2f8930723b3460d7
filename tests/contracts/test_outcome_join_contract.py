"""Outcomes joined to logged predictions, on SQLite (joined in Python) and PostgreSQL (joined in the database,
``registry.outcome_join``), with the same answers: by request id and row, by entity key and time window,
one row per logged record (a shadow's too), every logged output shape, matched, late, duplicate and unmatched
outcomes counted, wrong types and unknown ids refused, concurrent joins of the same outcomes counted once."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, delete

from modelyard.errors import OutcomeError, UnknownRequestError
from modelyard.predlog import PredictionRecord, insert_records
from modelyard.predlog.outcomes import Outcome, join_chunks, join_outcomes
from modelyard.registry import tables
from modelyard.registry.db import get_engine
from modelyard.registry.outcome_join import JoinInput, database_join, joins_in_database
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


def test_one_call_counts_matched_late_duplicate_and_unmatched_and_a_shadow_gets_its_own_row(engine: Engine) -> None:
    _log(engine)
    insert_records(engine, [PredictionRecord("r4", "houses", 1, "primary", [{"id": 4}], [400.0],
                                             ts=T0 - timedelta(days=3))])
    now = T0 + timedelta(hours=2)
    join_outcomes(engine, [Outcome(150.0, "r2")], model="houses", source="sql", task_of=_task, now=now)
    got = join_outcomes(engine, [Outcome(120.0, "r1", 0),   # matched: primary and shadow rows
                                 Outcome(121.0, "r1", 0),   # the same row twice in one call: duplicate
                                 Outcome(150.0, "r2"),      # stored by the call before: duplicate
                                 Outcome(410.0, "r4"),      # three days after its prediction: matched, late
                                 Outcome(1.0, "ghost"), Outcome(2.0, "r2", 3)],  # unmatched (no such row)
                        model="houses", source="sql", task_of=_task, now=now)
    assert (got.received, got.matched, got.duplicate, got.unmatched, got.late) == (6, 2, 2, 2, 1)
    assert got.by_model == {"houses": {"matched": 2, "duplicate": 2, "late": 1, "unmatched": 2}}
    assert got.unmatched_ids == ["ghost", "r2"] and got.rows_stored == 5  # r1 x 2 routes, r4, 2 unmatched
    rows = SqlOutcomeStore(engine).select("houses")
    by_route = {(r["request_id"], r["route"]): (r["version"], r["predicted"], r["actual"], r["late"]) for r in rows}
    assert by_route == {("r1", "primary"): (1, 100.0, 120.0, False), ("r1", "shadow"): (2, 110.0, 120.0, False),
                        ("r2", "primary"): (1, 150.0, 150.0, False), ("r4", "primary"): (1, 400.0, 410.0, True)}
    counts = SqlOutcomeStore(engine).counts("houses")
    assert (counts.matched, counts.unmatched, counts.late) == (4, 2, 1)


@pytest.mark.parametrize(("outputs", "meta", "row", "predicted", "probabilities"), [
    ([{"prediction": "yes"}, {"prediction": "no"}], {"probabilities": [[0.2, 0.8], [0.9, 0.1]]}, 1, "no", [0.9, 0.1]),
    ({"predictions": ["no", "yes"]}, None, 1, "yes", None),
    ({"label": "yes"}, {"probabilities": "not a list"}, 0, "yes", None),
    ([["yes"], [{"value": "no"}]], {"probabilities": [[0.3, 0.7]]}, 1, "no", None),
    ("yes", None, 0, "yes", None),
    ([[[["no"]]]], None, 0, "no", None),
])
def test_the_predicted_value_and_probabilities_are_read_from_every_logged_shape(
        engine: Engine, outputs: object, meta: object, row: int, predicted: object, probabilities: object) -> None:
    insert_records(engine, [PredictionRecord("c1", "churn", 3, "primary", [{"id": 1}, {"id": 2}], outputs,
                                             n_rows=2, meta=meta, ts=T0)])  # type: ignore[arg-type]
    got = join_outcomes(engine, [Outcome(1.0 if predicted == "no" else "yes", "c1", row)], model="churn",
                        task_of=lambda m, v: ("classification", None), now=T0 + timedelta(minutes=5))
    assert (got.matched, got.unmatched) == (1, 0)
    [stored] = SqlOutcomeStore(engine).select("churn")
    assert (stored["predicted"], stored["probabilities"], stored["row"]) == (predicted, probabilities, row)
    assert stored["actual"] == (1 if predicted == "no" else "yes") and type(stored["actual"]) is not float


def test_a_wrong_typed_actual_outside_strict_mode_is_kept_as_unmatched(engine: Engine) -> None:
    _log(engine)
    got = join_outcomes(engine, [Outcome("expensive", "r2"), Outcome(float("nan"), "r1", 1),
                                 Outcome(160.0, "r1", 0), Outcome(2**70, "r4")],
                        model="houses", source="stream", task_of=_task, now=T0 + timedelta(hours=1))
    assert (got.matched, got.unmatched, got.rows_stored) == (1, 3, 5)
    assert got.unmatched_ids == ["r2", "r1", "r4"]
    assert [(r["request_id"], r["route"]) for r in SqlOutcomeStore(engine).select("houses")] == [
        ("r1", "primary"), ("r1", "shadow")]
    assert SqlOutcomeStore(engine).counts("houses").unmatched == 3


def test_each_outcome_is_checked_against_the_classes_of_the_version_that_answered_it(engine: Engine) -> None:
    insert_records(engine, [PredictionRecord("a", "tiers", 1, "primary", [{"id": 1}], ["low"], ts=T0),
                            PredictionRecord("b", "tiers", 2, "canary", [{"id": 2}], ["mid"], ts=T0),
                            PredictionRecord("b", "tiers", 1, "mirror", [{"id": 2}], ["low"], ts=T0)])
    classes = {1: ["high", "low"], 2: ["high", "low", "mid"]}

    def task(model: str, version: int) -> tuple[str, list[object] | None]:
        return "classification", list(classes[version])

    got = join_outcomes(engine, [Outcome("mid", "a"), Outcome("mid", "b")], model="tiers", task_of=task,
                        now=T0 + timedelta(minutes=1))
    assert (got.matched, got.unmatched, got.unmatched_ids) == (1, 1, ["a"])
    assert sorted((r["request_id"], r["route"]) for r in SqlOutcomeStore(engine).select("tiers")) == [
        ("b", "canary"), ("b", "mirror")]
    with pytest.raises(OutcomeError) as info:
        join_outcomes(engine, [Outcome("low", "b"), Outcome("mid", "a")], strict=True, task_of=task)
    assert info.value.context == {"field": "actual", "row": 1} and "'mid'" in info.value.message


def test_entity_keys_match_as_text_across_columns_and_ignore_shadow_inputs(engine: Engine) -> None:
    insert_records(engine, [
        PredictionRecord("k1", "houses", 1, "primary", [{"city": "Pune", "no": 17.0}, {"city": "Pune", "no": 18}],
                         [100.0, 200.0], n_rows=2, ts=T0),
        PredictionRecord("k1", "houses", 2, "shadow", [{"city": "Pune", "no": 17.0}, {"city": "Pune", "no": 18}],
                         [101.0, 201.0], n_rows=2, ts=T0),
        PredictionRecord("k2", "houses", 2, "shadow", [{"city": "Pune", "no": 18}], [999.0],
                         ts=T0 + timedelta(minutes=5)),
        PredictionRecord("k3", "houses", 1, "primary", [{"city": "Delhi", "no": "17"}, {"city": True, "no": None}],
                         [300.0, 310.0], n_rows=2, ts=T0 + timedelta(minutes=1)),
    ])
    at = T0 + timedelta(minutes=10)
    got = join_outcomes(engine, [Outcome(150.0, key={"no": 17, "city": "Pune"}, at=at),
                                 Outcome(250.0, key={"city": "Pune", "no": "18"}, at=at),
                                 Outcome(350.0, key={"no": 17.0, "city": "Delhi"}, at=at),
                                 Outcome(360.0, key={"city": True, "no": None}, at=at),
                                 Outcome(1.0, key={"city": "Pune", "no": 19}, at=at),
                                 # the latest row with no=17 is k3's row 0 ("17" is 17 as text), named above
                                 Outcome(2.0, key={"no": 17}, at=at),
                                 Outcome(990.0, "k2")],  # by request id in the same call: a shadow's record only
                        model="houses", window=3600, task_of=_task, now=at)
    assert (got.matched, got.unmatched, got.duplicate) == (5, 1, 1)
    assert got.unmatched_ids == ["city=Pune,no=19"]
    rows = {(r["request_id"], r["row"], r["route"]): r["actual"] for r in SqlOutcomeStore(engine).select("houses")}
    assert rows.pop(("k2", 0, "shadow")) == 990.0
    assert rows == {("k1", 0, "primary"): 150.0, ("k1", 0, "shadow"): 150.0, ("k1", 1, "primary"): 250.0,
                    ("k1", 1, "shadow"): 250.0, ("k3", 0, "primary"): 350.0, ("k3", 1, "primary"): 360.0}


def test_request_ids_with_tabs_backslashes_and_newlines_round_trip(engine: Engine) -> None:
    odd = "a\tb\\c\nd\re \u00e9"
    insert_records(engine, [PredictionRecord(odd, "houses", 1, "primary", [{"id": 1}], [5.0], ts=T0)])
    got = join_outcomes(engine, [Outcome(6.0, odd), Outcome(7.0, odd + "\\N")], model="houses", task_of=_task,
                        now=T0 + timedelta(minutes=1))
    assert (got.matched, got.unmatched, got.unmatched_ids) == (1, 1, [odd + "\\N"])
    assert [(r["request_id"], r["actual"]) for r in SqlOutcomeStore(engine).select("houses")] == [(odd, 6.0)]


@pytest.mark.postgres
def test_two_joins_of_the_same_outcomes_at_once_store_each_row_once_and_count_it_once(
        pg_session_url: str) -> None:
    engine = get_engine(pg_session_url)
    with engine.begin() as conn:
        for table in reversed(tables.metadata.sorted_tables):
            conn.execute(delete(table))
    assert joins_in_database(engine)
    n = 3000
    insert_records(engine, [PredictionRecord(f"q{i}", "houses", 1, "primary", [{"id": i}], [float(i)], ts=T0)
                            for i in range(n)])
    outcomes = [Outcome(float(i) + 0.5, f"q{i}") for i in range(n)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda part: join_outcomes(engine, part, model="houses", task_of=_task,
                                                           now=T0 + timedelta(minutes=1)),
                                [outcomes, outcomes[::-1]]))
    assert sum(r.matched for r in results) == n and sum(r.duplicate for r in results) == n
    assert sum(r.rows_stored for r in results) == n == SqlOutcomeStore(engine).counts("houses").matched


def test_a_join_probes_the_log_and_the_outcomes_by_index_even_when_the_statistics_say_empty(
        pg_session_url: str) -> None:
    """Planned from statistics of empty tables (a new database, or a join while another one fills the table),
    a sequential probe per outcome made two 50k joins at once run for minutes: the probes must use indexes."""
    engine = get_engine(pg_session_url)
    with engine.begin() as conn:
        for table in reversed(tables.metadata.sorted_tables):
            conn.execute(delete(table))
        conn.exec_driver_sql("ANALYZE modelyard_outcomes")
        conn.exec_driver_sql("ANALYZE modelyard_predictions")
    n = 2000
    data = JoinInput(request_ids=[f"p{i}" for i in range(n)], rows=[0] * n, actuals=[1.0] * n, observed=[None] * n)
    with database_join(engine, data, model="houses", source="test", now=T0, late_after=86400.0,
                       window=3600.0) as join:
        plan = join.plan()
    scans = [line.strip() for line in plan.splitlines()  # the outcomes' own temporary table is read whole
             if "Seq Scan on modelyard_predictions" in line or "Seq Scan on modelyard_outcomes " in line]
    assert not scans, plan
    # and the stored outcomes by the unique index: by the time index alone (model = ...), each probe read every
    # outcome of the model that a join running beside this one had stored (two 20k joins: 0.5 s -> 13.7 s)
    probes = [line.strip() for line in plan.splitlines() if " on modelyard_outcomes " in line and "Scan" in line]
    assert probes and all("using uq_outcome_request_row_route" in p for p in probes), plan


def test_chunks_joined_at_once_give_the_counts_of_one_after_the_other_in_the_input_order(engine: Engine) -> None:
    """``join_chunks`` joins two chunks at once on PostgreSQL (one after the other on SQLite): the results come
    back in the chunks' order and add up to what joining them one by one gives, a repeat across chunks once."""
    n = 400
    insert_records(engine, [PredictionRecord(f"c{i}", "houses", 1, "primary", [{"id": i}], [float(i)], ts=T0)
                            for i in range(n)])
    outcomes = [Outcome(float(i) + 0.5, f"c{i}") for i in range(n)] + [Outcome(1.5, "c1"), Outcome(2.0, "nope")]
    chunks = [(outcomes[i:i + 67], i) for i in range(0, len(outcomes), 67)]
    now = T0 + timedelta(minutes=1)
    got = list(join_chunks(engine, iter(chunks), in_flight=2, model="houses", task_of=_task, now=now))
    assert [tag for _, tag in got] == [tag for _, tag in chunks]
    assert [r.received for r, _ in got] == [len(c) for c, _ in chunks]
    assert sum(r.matched for r, _ in got) == n and sum(r.duplicate for r, _ in got) == 1
    assert sum(r.unmatched for r, _ in got) == 1
    assert SqlOutcomeStore(engine).counts("houses").matched == n


def test_a_failing_chunk_fails_the_chunked_join_after_the_joins_started_finish(engine: Engine) -> None:
    insert_records(engine, [PredictionRecord(f"e{i}", "houses", 1, "primary", [{"id": i}], [float(i)], ts=T0)
                            for i in range(10)])

    def chunks() -> Iterator[tuple[list[Outcome], int]]:
        yield [Outcome(1.0, f"e{i}") for i in range(5)], 0
        yield [Outcome(1.0, f"e{i}") for i in range(5, 10)], 1
        raise OutcomeError("the source broke", field="actual")

    results = []
    with pytest.raises(OutcomeError, match="the source broke"):
        for result, _ in join_chunks(engine, chunks(), in_flight=2, model="houses", task_of=_task, now=T0):
            results.append(result)
    assert SqlOutcomeStore(engine).counts("houses").matched == 10  # both chunks read before it were joined
