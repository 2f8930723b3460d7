"""Every Prometheus metric modelyard exports, defined once so servers, dashboards and rules agree on names.

With several uvicorn workers, ``modelyard serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports this module: prometheus_client then keeps each worker's values in memory-mapped files and
``render()`` sums them, so ``/metrics`` counts the requests of every worker, whichever one answers.
Gauges say how they combine across workers (``multiprocess_mode``).

Labels: ``version`` is the version number as text ("" when the request never reached a model); ``route``
is primary | canary | shadow | mirror.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

from modelyard.schema import InputSchema

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # no "_created" series: they double the output and no rule of ours reads them

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
# Predictions span probabilities, class indices and prices: 1-2.5-5 per decade from 0.01 to 10 million.
VALUE_BUCKETS = tuple(sorted({round(m * 10.0**e, 6) for e in range(-2, 8) for m in (1.0, 2.5, 5.0)}))

REQUESTS = Counter(
    "modelyard_requests", "Prediction requests answered, by model, version, route and HTTP status.",
    ["model", "version", "route", "status"],
)
REQUEST_ERRORS = Counter(
    "modelyard_request_errors", "Prediction requests that failed, by error code.",
    ["model", "version", "route", "code"],
)
REQUEST_LATENCY = Histogram(
    "modelyard_request_latency_seconds", "Time from a prediction request's arrival to its answer.",
    ["model", "version", "route"], buckets=LATENCY_BUCKETS,
)
PREDICTION_VALUE = Histogram(
    "modelyard_prediction_value",
    "Predicted values (regression) or predicted class indices (classification), one observation per row.",
    ["model", "version"], buckets=VALUE_BUCKETS,
)
INPUT_MISSING = Counter(
    "modelyard_input_missing", "Input values that were missing (null), per feature.",
    ["model", "version", "feature"],
)
INPUT_OUT_OF_RANGE = Counter(
    "modelyard_input_out_of_range",
    "Input values outside the training range (numeric) or unseen in training (categorical), per feature.",
    ["model", "version", "feature"],
)
DRIFT_PSI = Gauge(
    "modelyard_drift_psi", "Population stability index of a feature against the bundle's reference.",
    ["model", "version", "feature"], multiprocess_mode="mostrecent",
)
DRIFT_KS = Gauge(
    "modelyard_drift_ks", "Kolmogorov-Smirnov statistic of a numeric feature against the reference.",
    ["model", "version", "feature"], multiprocess_mode="mostrecent",
)
CANARY_WEIGHT = Gauge(
    "modelyard_canary_weight", "Share of traffic routed to the canary (0 when none).",
    ["model"], multiprocess_mode="livemostrecent",
)
ALIAS_VERSION = Gauge(
    "modelyard_alias_version", "The version an alias points at, as the server last saw it.",
    ["model", "alias"], multiprocess_mode="livemostrecent",
)
MODEL_LOAD_FAILURES = Counter(
    "modelyard_model_load_failures", "Versions the server refused to load (failed verification or loading).",
    ["model", "version"],
)
PREDICTION_LOG_PENDING = Gauge(
    "modelyard_prediction_log_pending", "Prediction records not yet in the database (queued or spilled).",
    multiprocess_mode="livesum",
)
PREDICTION_LOG_SPILLED = Counter(
    "modelyard_prediction_log_spilled", "Prediction records written to the spill file while the DB was down.",
)
CANARY_ERRORS = Counter(
    "modelyard_canary_errors", "Canary predictions that failed; the primary answered those requests instead.",
    ["model", "version"],
)
SHADOW_DROPPED = Counter(
    "modelyard_shadow_dropped", "Shadow or mirror jobs dropped because the server's shadow queue was full.",
    ["model", "route"],
)
SHADOW_ERRORS = Counter(
    "modelyard_shadow_errors", "Shadow or mirror predictions that failed (never seen by the caller).",
    ["model", "version", "route"],
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``: this process's registry, or all workers' in multiprocess mode."""
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode only)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid or os.getpid())


def observe_request(model: str, version: str, route: str, status: int, seconds: float,
                    code: str | None = None) -> None:
    REQUESTS.labels(model, version, route, str(status)).inc()
    if code is not None:
        REQUEST_ERRORS.labels(model, version, route, code).inc()
    if model:
        REQUEST_LATENCY.labels(model, version, route).observe(seconds)


def observe_predictions(model: str, version: str, predictions: np.ndarray,
                        classes: Sequence[Any] | None = None) -> None:
    """One histogram observation per row: the value, or the class's index for a classifier."""
    hist = PREDICTION_VALUE.labels(model, version)
    values = np.asarray(predictions).ravel()
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        numbers = [float(index.get(v, -1)) for v in values.tolist()]
    elif values.dtype.kind in "fiub":
        numbers = values.astype("float64").tolist()
    else:
        return
    for v in numbers:
        if v == v:  # skip NaN
            hist.observe(v)


class _InputPlan:
    """What the per-feature counters need from a schema, computed once per loaded schema."""

    def __init__(self, schema: InputSchema) -> None:
        self.numeric = [(c.name, c.min, c.max) for c in schema.columns if c.kind == "numeric"]
        self.categorical = [(c.name, None if c.categories is None else frozenset(c.categories))
                            for c in schema.columns if c.kind == "categorical"]


_PLANS: dict[int, tuple[InputSchema, _InputPlan]] = {}
SMALL_REQUEST_ROWS = 32  # up to this many rows are counted in plain Python: cheaper than pandas per column


def _plan(schema: InputSchema) -> _InputPlan:
    cached = _PLANS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_PLANS) > 256:
            _PLANS.clear()
        cached = _PLANS[id(schema)] = (schema, _InputPlan(schema))
    return cached[1]


def _count_rows(plan: _InputPlan, rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, int], dict[str, int]]:
    missing: dict[str, int] = {}
    out: dict[str, int] = {}
    for name, low, high in plan.numeric:
        for row in rows:
            v = row.get(name)
            if v is None or v == "":
                missing[name] = missing.get(name, 0) + 1
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):  # validation accepted it, so pandas parsed what float() cannot
                continue
            if x != x:
                missing[name] = missing.get(name, 0) + 1
            elif low is not None and high is not None and (x < low or x > high):
                out[name] = out.get(name, 0) + 1
    for name, known in plan.categorical:
        for row in rows:
            v = row.get(name)
            if v is None or (isinstance(v, float) and v != v):
                missing[name] = missing.get(name, 0) + 1
            elif known is not None and str(v) not in known:
                out[name] = out.get(name, 0) + 1
    return missing, out


def _count_frame(plan: _InputPlan, frame: pd.DataFrame) -> tuple[dict[str, int], dict[str, int]]:
    missing: dict[str, int] = {}
    out: dict[str, int] = {}
    for name, low, high in plan.numeric:
        values = frame[name].to_numpy(dtype="float64", na_value=np.nan)
        missing[name] = int(np.isnan(values).sum())
        if low is not None and high is not None:
            with np.errstate(invalid="ignore"):
                out[name] = int(((values < low) | (values > high)).sum())
    for name, known in plan.categorical:
        series = frame[name]
        nulls = series.isna().to_numpy()
        missing[name] = int(nulls.sum())
        if known is not None:
            seen = ~series.astype(object).isin(known).to_numpy()
            out[name] = int((seen & ~nulls).sum())
    return missing, out


def observe_inputs(model: str, version: str, frame: pd.DataFrame, schema: InputSchema,
                   rows: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Count missing and out-of-range values per feature: values outside the training range (numeric) or
    categories never seen in training. ``rows`` (the validated request rows) makes small requests cheap."""
    plan = _plan(schema)
    if rows is not None and len(rows) <= SMALL_REQUEST_ROWS:
        missing, out = _count_rows(plan, rows)
    else:
        missing, out = _count_frame(plan, frame)
    for name, n in missing.items():
        if n:
            INPUT_MISSING.labels(model, version, name).inc(n)
    for name, n in out.items():
        if n:
            INPUT_OUT_OF_RANGE.labels(model, version, name).inc(n)
