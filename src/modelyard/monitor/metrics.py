"""Every Prometheus metric modelyard exports, defined once so servers, dashboards and rules agree on names.

With several uvicorn workers, ``modelyard serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before any worker
imports this module: prometheus_client then keeps each worker's values in memory-mapped files and
``render()`` sums them, so ``/metrics`` counts the requests of every worker, whichever one answers.
Gauges say how they combine across workers (``multiprocess_mode``): the drift gauges are set by the one
worker that holds the monitor lease, so the most recent value of a live worker wins; alias and canary
gauges are the same in every worker; the prediction-log backlog is summed.

Labels: ``version`` is the version number as text ("" when the request never reached a model); ``route``
is primary | canary | shadow | mirror.

The per-request hooks are cheap on purpose (``benchmarks/monitor_hooks.py``): predictions are counted into the
histogram's buckets with numpy (one update per bucket, not one ``observe`` per row), and the per-feature
input counters read the request's own rows when it is small (a pass over up to 128 dicts costs less than
the fixed ~0.3 ms of reading 16 pandas columns) or the validated frame's columns when it is large.

The hooks (``observe_request``, ``observe_predictions``, ``observe_inputs``, ``observe_batch``) count into
``TALLY``, plain numbers per series, and ``flush()`` adds them to the Prometheus series in one go: in
multiprocess mode each ``inc`` is a lock, a ``getpid`` and a write into the worker's mmap file and each
``labels()`` another lock and lookup, ~45 µs for one request's hooks, more than its ONNX predict. On an
event loop the flush runs ``FLUSH_DELAY`` (10 ms) after the first count since the last one, for every count
made meanwhile: one flush for ~50 one-at-a-time requests, not one each (a flush in the next loop turn sat
on a lone client's path: ~20 µs of its ~200 µs at c=1, measured side by side). So a worker's counts reach
``/metrics`` within ``FLUSH_DELAY`` of the answer; in this process at once, since ``render()`` and every
collection of the default registry flush first; a caller without a running loop is flushed at once. The server's
success hook, ``observe_answer``, does not even count: it queues the answer, and the flush counts every
answer queued since the last one series by series (one pass over their predictions, one over the small
requests' rows): 5 µs a request at 16 requests a loop turn against 10 for the three hooks, measured side
by side in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

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
from prometheus_client.registry import Collector

from modelyard.schema import InputSchema, derived

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ColumnData: TypeAlias = pd.DataFrame | Mapping[str, Any]  # validated rows: a frame, or one array per column
disable_created_metrics()  # type: ignore[no-untyped-call] # no "_created" series: they double the output and no rule of ours reads them

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
# Predictions span probabilities, class indices and prices: 1-2.5-5 per decade from 0.01 to 10 million.
VALUE_BUCKETS = tuple(sorted({round(m * 10.0**e, 6) for e in range(-2, 8) for m in (1.0, 2.5, 5.0)}))
SMALL_REQUEST_ROWS = 128  # up to this many rows, counting the request's dicts beats pandas column access
FLUSH_DELAY = 0.01  # seconds from a count on an event loop to its flush into the series (``Tally``)
SMALL_OBSERVE = 8  # up to this many values, a histogram's buckets are found with bisect rather than numpy


class Tally:
    """Counts for Prometheus series kept in plain numbers until ``flush`` adds them to the series.

    ``add`` counts into a counter's series, ``observe`` and ``observe_many`` into a histogram's buckets (the
    first bucket whose bound is >= the value, as ``Histogram.observe``; a NaN only reaches the sum). Series
    are created at the flush, so a series that was never counted is never exported, as before. Thread-safe:
    the loop counts while a scrape in another thread may flush.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[Counter, tuple[str, ...]], float] = {}
        self._hists: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}  # bucket counts, then the sum
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}  # labelled series, once looked up
        self._answers: list[_Answer] = []  # answered requests, counted at the flush (``answered``)
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def add(self, counter: Counter, labels: tuple[str, ...], amount: float = 1.0) -> None:
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0.0) + amount
        self._schedule()

    def observe(self, hist: Histogram, labels: tuple[str, ...], value: float) -> None:
        with self._lock:
            self._observe(self._pending(hist, labels), hist, value)
        self._schedule()

    def observe_many(self, hist: Histogram, labels: tuple[str, ...], values: np.ndarray | Sequence[float]) -> None:
        if not isinstance(values, np.ndarray) and len(values) <= SMALL_OBSERVE:  # a batch's few queue waits:
            with self._lock:  # counted one by one, without an array made of them
                pending = self._pending(hist, labels)
                for v in values:
                    self._observe(pending, hist, float(v))
            if values:
                self._schedule()
            return
        array = np.asarray(values, dtype="float64").ravel()
        if not len(array):
            return
        with self._lock:
            self._observe_array(self._pending(hist, labels), hist, array)
        self._schedule()

    def answered(self, answer: _Answer) -> None:
        """Queue one answered request: its counts are made at the flush, with every answer queued since the
        last one (``_digest``)."""
        with self._lock:
            self._answers.append(answer)
        self._schedule()

    def _observe_array(self, pending: list[float], hist: Histogram, array: np.ndarray) -> None:
        if len(array) <= SMALL_OBSERVE:
            for v in array.tolist():
                self._observe(pending, hist, v)
            return
        finite = array[~np.isnan(array)]
        pending[-1] += float(array.sum())
        bounds = np.asarray(hist._upper_bounds, dtype="float64")
        counts = np.bincount(np.searchsorted(bounds, finite, side="left"), minlength=len(bounds))
        for i in np.flatnonzero(counts).tolist():
            pending[i] += int(counts[i])

    def _count(self, counter: Counter, labels: tuple[str, ...], amount: float) -> None:
        key = (counter, labels)
        self._counts[key] = self._counts.get(key, 0.0) + amount

    def count_inputs(self, labels: tuple[str, ...], missing: Mapping[str, int], out: Mapping[str, int]) -> None:
        """The per-feature counts of missing and out-of-range inputs (``_count_rows``, ``_count_frame``)."""
        with self._lock:
            self._count_inputs(labels, missing, out)
        self._schedule()

    def _count_inputs(self, labels: tuple[str, ...], missing: Mapping[str, int], out: Mapping[str, int]) -> None:
        for name, n in missing.items():
            if n:
                self._count(INPUT_MISSING, (*labels, name), n)
        for name, n in out.items():
            if n:
                self._count(INPUT_OUT_OF_RANGE, (*labels, name), n)

    def _digest(self, answers: list[_Answer]) -> None:
        """The counts of queued answers, series by series: one request count, the latencies, the predicted
        values of all of them in one pass, the inputs of the small ones in one pass over their rows. What
        ``observe_request``, ``observe_predictions`` and ``observe_inputs`` count, at a fraction of their cost
        per request (one lock, one schedule, no numpy call on a one-row array)."""
        groups: dict[tuple[tuple[str, str, str], int], list[_Answer]] = {}
        for answer in answers:
            groups.setdefault((answer.labels, id(answer.schema)), []).append(answer)
        for (labels, _), group in groups.items():
            self._count(REQUESTS, (*labels, "200"), len(group))
            latency = self._pending(REQUEST_LATENCY, labels)
            for answer in group:
                self._observe(latency, REQUEST_LATENCY, answer.seconds)
            numbers = _prediction_numbers([a.predictions for a in group], group[0].classes)
            if numbers is not None and len(numbers):
                self._observe_array(self._pending(PREDICTION_VALUE, labels), PREDICTION_VALUE, numbers)
            plan = _plan(group[0].schema)
            small: list[Mapping[str, Any]] = []  # the rows of every small request, counted in one pass
            for answer in group:
                if answer.rows is not None and len(answer.rows) <= SMALL_REQUEST_ROWS:
                    small.extend(answer.rows)
                else:
                    self._count_inputs(labels, *_count_frame(plan, answer.frame()))
            if small:
                self._count_inputs(labels, *_count_rows(plan, small))

    def _pending(self, hist: Histogram, labels: tuple[str, ...]) -> list[float]:
        key = (hist, labels)
        pending = self._hists.get(key)
        if pending is None:
            pending = self._hists[key] = [0.0] * (len(hist._upper_bounds) + 1)
        return pending

    @staticmethod
    def _observe(pending: list[float], hist: Histogram, value: float) -> None:
        pending[-1] += value
        if value == value:  # NaN falls in no bucket
            pending[bisect_left(hist._upper_bounds, value)] += 1

    def _schedule(self) -> None:
        loop = asyncio._get_running_loop()
        if loop is None:
            self.flush()
        elif self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Add every pending count to its Prometheus series (under the lock: a reader that flushes while
        another flush is adding waits for it, and then sees everything counted before its call)."""
        with self._lock:
            answers, self._answers = self._answers, []
            if answers:
                self._digest(answers)
            counts, self._counts = self._counts, {}
            hists, self._hists = self._hists, {}
            self._scheduled_on = None
            for counter, amount in counts.items():
                self._child(counter).inc(amount)
            for hist, pending in hists.items():
                child = self._child(hist)
                child._sum.inc(pending[-1])
                for i, n in enumerate(pending[:-1]):
                    if n:
                        child._buckets[i].inc(n)

    def _child(self, key: tuple[Any, tuple[str, ...]]) -> Any:
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # label sets come and go with versions: stay bounded
                self._children.clear()
            child = self._children[key] = key[0].labels(*key[1])
        return child


TALLY = Tally()


class _FlushFirst(Collector):
    """Registered before every metric below: a collection of the default registry flushes ``TALLY`` first
    (a test reading ``REGISTRY.get_sample_value`` sees what was counted). It exports nothing itself."""

    def collect(self) -> Iterable[Any]:
        TALLY.flush()
        return []


REGISTRY.register(_FlushFirst())

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
    ["model", "version", "route"], buckets=VALUE_BUCKETS,
)
INPUT_MISSING = Counter(
    "modelyard_input_missing", "Input values that were missing (null), per feature.",
    ["model", "version", "route", "feature"],
)
INPUT_OUT_OF_RANGE = Counter(
    "modelyard_input_out_of_range",
    "Input values outside the training range (numeric) or unseen in training (categorical), per feature.",
    ["model", "version", "route", "feature"],
)
DRIFT_PSI = Gauge(
    "modelyard_drift_psi", "Population stability index of a feature against the bundle's reference.",
    ["model", "version", "feature"], multiprocess_mode="livemostrecent",
)
DRIFT_KS = Gauge(
    "modelyard_drift_ks", "Kolmogorov-Smirnov statistic of a numeric feature against the reference.",
    ["model", "version", "feature"], multiprocess_mode="livemostrecent",
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
BATCH_ROWS = Histogram(
    "modelyard_batch_rows", "Rows in each micro-batch predict call (requests coalesced by the server).",
    ["model", "version"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
)
BATCH_QUEUE_WAIT = Histogram(
    "modelyard_batch_queue_wait_seconds", "Time a request waited in the micro-batch queue before its batch ran.",
    ["model", "version"], buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1, 0.25, 1.0),
)
PREDICTION_LOG_SPILLED = Counter(
    "modelyard_prediction_log_spilled",
    "Prediction records written ahead while the database was unreachable (they wait in segments).",
)
LOG_BACKLOG_RECORDS = Gauge(
    "modelyard_log_backlog_records", "Prediction records in write-ahead segments, not yet in the database.",
    multiprocess_mode="livemax",  # every worker scans the same folder
)
LOG_BACKLOG_SEGMENTS = Gauge(
    "modelyard_log_backlog_segments", "Write-ahead segments waiting to be shipped (or being written).",
    multiprocess_mode="livemax",
)
LOG_OLDEST_AGE = Gauge(
    "modelyard_log_oldest_age_seconds", "Age of the oldest prediction record waiting in a segment (0: none).",
    multiprocess_mode="livemax",
)
LOG_SHIP_ERRORS = Counter(
    "modelyard_log_ship_errors", "Failed attempts to ship write-ahead segments into the database.",
)
LOG_WRITE_FAILURES = Counter(
    "modelyard_log_write_failures",
    "Writes to the prediction log's segment that failed (disk full, unwritable folder): requests refused "
    "with 503, or answered unlogged under MODELYARD_LOG_ON_FAILURE=serve.",
)
LOG_SERVED_UNLOGGED = Counter(
    "modelyard_log_served_unlogged",
    "Prediction records answered without a durable log (MODELYARD_LOG_ON_FAILURE=serve while failing).",
)
CANARY_ERRORS = Counter(
    "modelyard_canary_errors", "Canary predictions that failed; the primary answered those requests instead.",
    ["model", "version"],
)
SHADOW_DROPPED = Counter(
    "modelyard_shadow_dropped", "Shadow or mirror jobs dropped because the server's shadow queue was full.",
    ["model", "route"],
)
OUTCOMES = Counter(
    "modelyard_outcomes", "Outcomes received (POST /v1/feedback, stream labels), by how they joined the log: "
    "matched, duplicate, unmatched, late (late ones are matched too).",
    ["model", "status"],
)
LIVE_METRIC = Gauge(
    "modelyard_live_metric", "Quality on labelled live traffic over the monitor's window (mae, rmse, r2; "
    "accuracy, f1, roc_auc, log_loss, ece; estimated_accuracy: CBPE before labels).",
    ["model", "version", "metric"], multiprocess_mode="livemostrecent",
)
LABEL_COVERAGE = Gauge(
    "modelyard_label_coverage", "Share of the window's answered rows that have an outcome.",
    ["model", "version"], multiprocess_mode="livemostrecent",
)
LABEL_DELAY = Gauge(
    "modelyard_label_delay_seconds", "Median time from a prediction to its outcome's arrival, over the window.",
    ["model", "version"], multiprocess_mode="livemostrecent",
)
LABELLED_ROWS = Gauge(
    "modelyard_labelled_rows", "Answered rows with an outcome in the monitor's window.",
    ["model", "version"], multiprocess_mode="livemostrecent",
)
SHADOW_ERRORS = Counter(
    "modelyard_shadow_errors", "Shadow or mirror predictions that failed (never seen by the caller).",
    ["model", "version", "route"],
)


def observe_log_backlog(segments: int, records: int, oldest_age_seconds: float | None) -> None:
    LOG_BACKLOG_SEGMENTS.set(segments)
    LOG_BACKLOG_RECORDS.set(records)
    LOG_OLDEST_AGE.set(oldest_age_seconds or 0.0)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def flush() -> None:
    """Add this process's pending counts to the series (``render`` and the default registry do it first)."""
    TALLY.flush()


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``: this process's registry, or all workers' in multiprocess mode."""
    TALLY.flush()
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Drop a stopped worker's live gauges (multiprocess mode only)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]


def drop_series(gauge: Gauge, *labels: str) -> None:
    """Stop exporting one labelled series. prometheus_client cannot remove a series in multiprocess mode (its
    value stays in the worker's file), so there it is set to NaN: no comparison in a rule is true for NaN."""
    if multiprocess_enabled():
        gauge.labels(*labels).set(float("nan"))
        return
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)


def observe_request(model: str, version: str, route: str, status: int, seconds: float,
                    code: str | None = None) -> None:
    TALLY.add(REQUESTS, (model, version, route, str(status)))
    if code is not None:
        TALLY.add(REQUEST_ERRORS, (model, version, route, code))
    if model:
        TALLY.observe(REQUEST_LATENCY, (model, version, route), seconds)


@dataclass(frozen=True, slots=True)
class _Answer:
    labels: tuple[str, str, str]  # model, version, route
    seconds: float
    predictions: np.ndarray
    classes: Sequence[Any] | None
    frame: Callable[[], ColumnData]
    schema: InputSchema
    rows: Sequence[Mapping[str, Any]] | None


def observe_answer(model: str, version: str, route: str, seconds: float, predictions: np.ndarray,
                   classes: Sequence[Any] | None, frame: Callable[[], ColumnData], schema: InputSchema,
                   rows: Sequence[Mapping[str, Any]] | None = None) -> None:
    """One answered request (status 200): what ``observe_request``, ``observe_predictions`` and
    ``observe_inputs`` count, counted at the next flush together with every other answer since the last
    one (the server's success hook). ``frame`` gives the validated rows; it is only called for a request
    over ``SMALL_REQUEST_ROWS`` rows or without ``rows``."""
    TALLY.answered(_Answer((model, version, route), seconds, predictions, classes, frame, schema, rows))


def observe_batch(model: str, version: str, rows: int, queue_waits: Sequence[float]) -> None:
    """One micro-batch: its size, and how long each of its requests waited for it."""
    TALLY.observe(BATCH_ROWS, (model, version), rows)
    TALLY.observe_many(BATCH_QUEUE_WAIT, (model, version), queue_waits)


def observe_predictions(model: str, version: str, predictions: np.ndarray,
                        classes: Sequence[Any] | None = None, *, route: str) -> None:
    """One histogram observation per row: the value, or the class's index for a classifier (-1: unknown)."""
    numbers = _prediction_numbers([predictions], classes)
    if numbers is not None and len(numbers):
        TALLY.observe_many(PREDICTION_VALUE, (model, version, route), numbers)


def _prediction_numbers(predictions: Sequence[np.ndarray], classes: Sequence[Any] | None) -> np.ndarray | None:
    """The histogram's numbers for some requests' predictions: the values, or the class indices (-1:
    unknown), NaN left out; None when they are neither numbers nor classes."""
    parts = [np.asarray(p).ravel() for p in predictions]
    values = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if classes is not None:
        numbers = _class_indices(classes, values)
    elif values.dtype.kind in "fiub":
        numbers = values.astype("float64")
    else:
        return None
    finite: np.ndarray = numbers[~np.isnan(numbers)]
    return finite


def _class_indices(classes: Sequence[Any], values: np.ndarray) -> np.ndarray:
    if len(values) <= SMALL_REQUEST_ROWS:  # a dict beats building a pandas index for a few rows
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index.get(v, -1) for v in values.tolist()], dtype="float64")
    indices: np.ndarray = pd.Index(list(classes), dtype=object).get_indexer(values.astype(object)).astype("float64")
    return indices


class _InputPlan:
    """What the per-feature counters need from a schema, computed once per loaded schema."""

    def __init__(self, schema: InputSchema) -> None:
        self.numeric = [(c.name, c.min, c.max) for c in schema.columns if c.kind == "numeric"]
        self.categorical = [(c.name, None if c.categories is None else frozenset(c.categories))
                            for c in schema.columns if c.kind == "categorical"]


def _plan(schema: InputSchema) -> _InputPlan:
    return derived(schema, _InputPlan)


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


def _count_frame(plan: _InputPlan, frame: ColumnData) -> tuple[dict[str, int], dict[str, int]]:
    """Column by column over the validated rows (a DataFrame, or one array per column): numpy for numbers; a
    hash-set pass for categories (5-10x cheaper than ``Series.isin`` or ``np.isin``)."""
    missing: dict[str, int] = {}
    out: dict[str, int] = {}
    for name, low, high in plan.numeric:
        values = np.asarray(frame[name], dtype="float64")
        missing[name] = int(np.count_nonzero(np.isnan(values)))
        if low is not None and high is not None:
            with np.errstate(invalid="ignore"):
                out[name] = int(np.count_nonzero((values < low) | (values > high)))
    for name, known in plan.categorical:
        values = np.asarray(frame[name], dtype=object)
        nulls = int(np.count_nonzero(pd.isna(values)))
        missing[name] = nulls
        if known is not None:  # a null is never in ``known``: counted by the pass, then taken off
            out[name] = sum(1 for v in values.tolist() if v not in known) - nulls
    return missing, out


def observe_inputs(model: str, version: str, frame: ColumnData, schema: InputSchema,
                   rows: Sequence[Mapping[str, Any]] | None = None, *, route: str) -> None:
    """Count missing and out-of-range values per feature: values outside the training range (numeric) or
    categories never seen in training. ``frame`` is the validated rows (a DataFrame, or one array per
    column); ``rows`` (the request's rows) makes small requests cheap."""
    plan = _plan(schema)
    if rows is not None and len(rows) <= SMALL_REQUEST_ROWS:
        counts = _count_rows(plan, rows)
    else:
        counts = _count_frame(plan, frame)
    TALLY.count_inputs((model, version, route), *counts)
