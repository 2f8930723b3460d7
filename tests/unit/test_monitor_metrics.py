"""Every metric name the other parts build on exists, and the per-feature input counters count right."""

from __future__ import annotations

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
]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_agreed_metric_name_is_exported() -> None:
    metrics.CANARY_WEIGHT.labels("names-check").set(0)
    metrics.ALIAS_VERSION.labels("names-check", "production").set(1)
    metrics.DRIFT_PSI.labels("names-check", "1", "a").set(0)
    metrics.DRIFT_KS.labels("names-check", "1", "a").set(0)
    metrics.observe_request("names-check", "1", "primary", 422, 0.01, "schema_error")
    metrics.observe_predictions("names-check", "1", np.array([1.0]))
    metrics.INPUT_MISSING.labels("names-check", "1", "a").inc(0)
    metrics.INPUT_OUT_OF_RANGE.labels("names-check", "1", "a").inc(0)
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
    metrics.observe_inputs(model, "1", schema.validate_rows(rows), schema, rows if with_rows else None)
    assert _value("modelyard_input_out_of_range_total", model=model, version="1", feature="x") == 2
    assert _value("modelyard_input_out_of_range_total", model=model, version="1", feature="c") == 1
    assert _value("modelyard_input_missing_total", model=model, version="1", feature="c") == 1
    nullable = InputSchema.infer(pd.DataFrame({"x": [0.0, None, 2.0]}))
    rows = [{"x": None}, {"x": 1.0}]
    metrics.observe_inputs(model, "2", nullable.validate_rows(rows), nullable, rows if with_rows else None)
    assert _value("modelyard_input_missing_total", model=model, version="2", feature="x") == 1
    assert _value("modelyard_input_out_of_range_total", model=model, version="2", feature="x") == 0


def test_predictions_are_observed_as_values_or_class_indices() -> None:
    metrics.observe_predictions("values-check", "1", np.array([0.5, 250_000.0, np.nan]))
    assert _value("modelyard_prediction_value_count", model="values-check", version="1") == 2
    assert _value("modelyard_prediction_value_sum", model="values-check", version="1") == 250_000.5
    labels = np.array(["no", "yes", "yes"], dtype=object)
    metrics.observe_predictions("values-check", "2", labels, ["no", "yes"])
    assert _value("modelyard_prediction_value_sum", model="values-check", version="2") == 2.0


def test_many_predictions_land_in_the_same_buckets_as_one_observation_each() -> None:
    values = np.array([-5.0, 0.0, 0.01, 0.0100001, 2.5, 2.5, 7.0, 1e7, 3e9, np.nan, 123456.0] * 3)
    metrics.observe_predictions("bulk", "1", values)  # the bulk path
    one_by_one = metrics.PREDICTION_VALUE.labels("bulk", "2")
    for v in values[~np.isnan(values)]:
        one_by_one.observe(float(v))
    bounds = [*metrics.VALUE_BUCKETS, float("inf")]
    for le in bounds:
        key = "+Inf" if le == float("inf") else str(le)
        assert _value("modelyard_prediction_value_bucket", model="bulk", version="1", le=key) == _value(
            "modelyard_prediction_value_bucket", model="bulk", version="2", le=key), le
    for suffix in ("_count", "_sum"):
        assert _value(f"modelyard_prediction_value{suffix}", model="bulk", version="1") == pytest.approx(
            _value(f"modelyard_prediction_value{suffix}", model="bulk", version="2"))
    assert _value("modelyard_prediction_value_count", model="bulk", version="1") == 30


def test_batch_metrics_are_exported() -> None:
    metrics.observe_batch("batch-names", "1", 12, [0.001, 0.002])
    assert _value("modelyard_batch_rows_sum", model="batch-names", version="1") == 12
    assert _value("modelyard_batch_queue_wait_seconds_count", model="batch-names", version="1") == 2
