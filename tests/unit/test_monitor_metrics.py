"""Every metric name the other parts build on exists, and the per-feature input counters count right."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from modelyard.monitor import metrics
from modelyard.schema import InputSchema

NAMES = [
    "modelyard_requests_total", "modelyard_request_errors_total", "modelyard_request_latency_seconds",
    "modelyard_prediction_value", "modelyard_input_missing_total", "modelyard_input_out_of_range_total",
    "modelyard_drift_psi", "modelyard_drift_ks", "modelyard_canary_weight", "modelyard_alias_version",
    "modelyard_model_load_failures_total", "modelyard_prediction_log_pending",
    "modelyard_prediction_log_spilled_total",
    "modelyard_log_backlog_records",
    "modelyard_log_backlog_segments",
    "modelyard_log_oldest_age_seconds",
    "modelyard_log_ship_errors_total",
    "modelyard_log_write_failures_total",
    "modelyard_log_served_unlogged_total",
]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_agreed_metric_name_is_exported() -> None:
    metrics.CANARY_WEIGHT.labels("names-check").set(0)
    metrics.ALIAS_VERSION.labels("names-check", "production").set(1)
    metrics.DRIFT_PSI.labels("names-check", "1", "a").set(0)
    metrics.DRIFT_KS.labels("names-check", "1", "a").set(0)
    metrics.observe_request("names-check", "1", "primary", 422, 0.01, "schema_error")
    metrics.observe_predictions("names-check", "1", np.array([1.0]), route="primary")
    metrics.INPUT_MISSING.labels("names-check", "1", "primary", "a").inc(0)
    metrics.INPUT_OUT_OF_RANGE.labels("names-check", "1", "primary", "a").inc(0)
    metrics.MODEL_LOAD_FAILURES.labels("names-check", "1").inc(0)
    text, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    lines = text.decode().splitlines()
    for name in NAMES:
        assert any(line.startswith((f"{name}{{", f"{name} ", f"{name}_bucket{{")) for line in lines), name
    assert not any("_created" in line for line in lines)


@pytest.mark.parametrize("with_rows", [True, False])  # small requests are counted from the rows themselves
def test_missing_and_out_of_range_inputs_are_counted_per_feature(with_rows: bool) -> None:
    model = f"inputs-check-{with_rows}"
    train = pd.DataFrame({"x": [0.0, 1.0, 2.0], "c": ["a", "b", None]})
    schema = InputSchema.infer(train)
    rows = [{"x": 5.0, "c": "a"}, {"x": "1", "c": "zzz"}, {"x": -1, "c": None}, {"x": 2, "c": "b"}]
    metrics.observe_inputs(model, "1", schema.validate_rows(rows), schema, rows if with_rows else None,
                           route="canary")
    labels = {"model": model, "version": "1", "route": "canary"}
    assert _value("modelyard_input_out_of_range_total", **labels, feature="x") == 2
    assert _value("modelyard_input_out_of_range_total", **labels, feature="c") == 1
    assert _value("modelyard_input_missing_total", **labels, feature="c") == 1
    nullable = InputSchema.infer(pd.DataFrame({"x": [0.0, None, 2.0]}))
    rows = [{"x": None}, {"x": 1.0}]
    metrics.observe_inputs(model, "2", nullable.validate_rows(rows), nullable, rows if with_rows else None,
                           route="primary")
    labels = {"model": model, "version": "2", "route": "primary"}
    assert _value("modelyard_input_missing_total", **labels, feature="x") == 1
    assert _value("modelyard_input_out_of_range_total", **labels, feature="x") == 0


def test_predictions_are_observed_as_values_or_class_indices() -> None:
    labels = {"model": "values-check", "version": "1", "route": "primary"}
    metrics.observe_predictions("values-check", "1", np.array([0.5, 250_000.0, np.nan]), route="primary")
    assert _value("modelyard_prediction_value_count", **labels) == 2
    assert _value("modelyard_prediction_value_sum", **labels) == 250_000.5
    for n in (3, 100):  # a few rows (a dict) and many (a pandas index) map classes the same way
        labels = {"model": "values-check", "version": f"c{n}", "route": "shadow"}
        predicted = np.array((["no", "yes", "maybe"] * n)[:n], dtype=object)
        metrics.observe_predictions("values-check", f"c{n}", predicted, ["no", "yes"], route="shadow")
        expected = sum({"no": 0, "yes": 1, "maybe": -1}[p] for p in predicted)
        assert _value("modelyard_prediction_value_sum", **labels) == expected
        assert _value("modelyard_prediction_value_count", **labels) == n


def test_many_values_land_in_the_buckets_observe_would_put_them_in() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.lognormal(11, 2, 500), np.array(metrics.VALUE_BUCKETS), [-5.0, 0.0, 1e12]])
    one_by_one = metrics.PREDICTION_VALUE.labels("bulk-check", "1", "primary")
    for v in values:
        one_by_one.observe(float(v))
    metrics.TALLY.observe_many(metrics.PREDICTION_VALUE, ("bulk-check", "2", "primary"), values)
    for le in [*(str(float(b)) for b in metrics.VALUE_BUCKETS), "+Inf"]:
        counts = [_value("modelyard_prediction_value_bucket", model="bulk-check", version=v, route="primary",
                         le=le) for v in ("1", "2")]
        assert counts[0] == counts[1], le
    sums = [_value("modelyard_prediction_value_sum", model="bulk-check", version=v, route="primary")
            for v in ("1", "2")]
    assert sums[1] == pytest.approx(sums[0], rel=1e-12)


def test_a_dropped_drift_series_is_no_longer_exported() -> None:
    metrics.DRIFT_PSI.labels("drop-check", "1", "a").set(0.4)
    assert b'modelyard_drift_psi{feature="a",model="drop-check",version="1"} 0.4' in metrics.render()[0]
    metrics.drop_series(metrics.DRIFT_PSI, "drop-check", "1", "a")
    metrics.drop_series(metrics.DRIFT_PSI, "drop-check", "1", "never-set")  # unknown series: no error
    assert b'model="drop-check"' not in metrics.render()[0]


def test_batch_metrics_are_exported() -> None:
    metrics.observe_batch("batch-names", "1", 12, [0.001, 0.002])
    assert _value("modelyard_batch_rows_sum", model="batch-names", version="1") == 12
    assert _value("modelyard_batch_queue_wait_seconds_count", model="batch-names", version="1") == 2


@pytest.mark.parametrize("waits", [1, 3, 8, 9, 40])
def test_batch_waits_land_in_the_buckets_observe_would_put_them_in(waits: int) -> None:
    """A few waits are counted one by one, many through numpy: either way as ``Histogram.observe``."""
    rng = np.random.default_rng(waits)
    values = [float(v) for v in rng.choice([0.00005, 0.0003, 0.001, 0.02, 2.0], waits)]
    model = f"batch-waits-{waits}"
    metrics.observe_batch(model, "1", waits * 2, values)
    reference = metrics.Histogram("reference_wait", "", buckets=metrics.BATCH_QUEUE_WAIT._upper_bounds[:-1],
                                  registry=None)
    for v in values:
        reference.observe(v)
    expected = {s.labels["le"]: s.value for s in reference.collect()[0].samples if s.name.endswith("_bucket")}
    for le, count in expected.items():
        assert _value("modelyard_batch_queue_wait_seconds_bucket", model=model, version="1", le=le) == count, le
    assert _value("modelyard_batch_queue_wait_seconds_sum", model=model, version="1") == pytest.approx(sum(values))
    assert _value("modelyard_batch_rows_bucket", model=model, version="1", le="+Inf") == 1


def _samples(model: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``model``'s series, by name and labels but the model's."""
    metrics.flush()
    return {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "model"))): s.value
            for family in REGISTRY.collect() for s in family.samples if s.labels.get("model") == model}


@pytest.mark.parametrize("classes", [None, ["cheap", "dear"]])
def test_queued_answers_count_what_the_three_hooks_count(classes: list[str] | None) -> None:
    """``observe_answer`` (the server's success hook, counted at the flush) against ``observe_request``,
    ``observe_predictions`` and ``observe_inputs`` called per request: small requests, one over
    ``SMALL_REQUEST_ROWS`` (counted from its frame), NaN and unknown values, two routes, in one flush."""
    frame = pd.DataFrame({"x": [0.0, None, 10.0], "c": ["a", "b", None]})  # nullable both
    schema = InputSchema.infer(frame)
    rng = np.random.default_rng(7)
    requests = []
    for n in (1, 1, 3, 2, metrics.SMALL_REQUEST_ROWS + 20):
        rows = [{"x": float(v) if v < 11 else None, "c": str(rng.choice(["a", "b", "z", None]))}
                for v in rng.integers(-3, 14, n)]
        for row in rows:
            if row["c"] == "None":
                row["c"] = None
        if classes is None:
            predictions = rng.lognormal(11, 2, n)
            predictions[0] = np.nan
        else:
            predictions = np.array(rng.choice(["cheap", "dear", "odd"], n), dtype=object)
        requests.append((rows, predictions))
    name = f"queued-{'cls' if classes else 'reg'}"
    for i, (rows, predictions) in enumerate(requests):
        route = "primary" if i % 2 else "canary"
        validated = schema.validate_rows(rows)
        seconds = 0.0004 * (i + 1)
        metrics.observe_request(f"{name}-hooks", "1", route, 200, seconds)
        metrics.observe_predictions(f"{name}-hooks", "1", predictions, classes, route=route)
        metrics.observe_inputs(f"{name}-hooks", "1", validated, schema, rows, route=route)

    async def answer_all() -> None:  # on a loop: queued, then counted in one flush
        for i, (rows, predictions) in enumerate(requests):
            metrics.observe_answer(f"{name}-queued", "1", "primary" if i % 2 else "canary", 0.0004 * (i + 1),
                                   predictions, classes, functools.partial(schema.validate_rows, rows), schema, rows)
        assert metrics.TALLY._answers  # nothing counted yet

    asyncio.run(answer_all())
    hooks, queued = _samples(f"{name}-hooks"), _samples(f"{name}-queued")
    assert hooks.keys() == queued.keys() and len(hooks) > 20
    for key, value in hooks.items():
        assert queued[key] == pytest.approx(value, rel=1e-12), key


def test_counts_on_a_loop_reach_the_series_after_the_flush_delay_and_at_once_for_a_reader() -> None:
    """One flush for every count made within ``FLUSH_DELAY``: the series itself moves only then, while a
    collection (what ``/metrics`` does) flushes first and sees every count at once."""
    child = metrics.REQUESTS.labels("delay-check", "1", "primary", "200")

    async def counted() -> tuple[float, float, float]:
        for _ in range(3):
            metrics.observe_request("delay-check", "1", "primary", 200, 0.001)
            await asyncio.sleep(0)  # loop turns pass: no flush yet
        early = child._value.get()
        await asyncio.sleep(metrics.FLUSH_DELAY * 3)
        flushed = child._value.get()
        metrics.observe_request("delay-check", "1", "primary", 200, 0.001)
        return early, flushed, _value("modelyard_requests_total", model="delay-check", version="1",
                                      route="primary", status="200")

    early, flushed, read = asyncio.run(counted())
    assert (early, flushed, read) == (0.0, 3.0, 4.0)
