"""Live quality: how right a version is on labelled live traffic, per window, beside its held-out figures.

Outcomes (``registry.outcomes``, joined by ``predlog.outcomes``) hold each labelled row's prediction and
true value. Over a window of predictions (``since <= predicted_at < until``):

- regressors: MAE, RMSE, R²; classifiers: accuracy, F1 (binary: the second class in sorted order, as the
  held-out metrics do; else macro), and, when the requests asked for probabilities, ROC AUC, log loss and
  the expected calibration error (``ece``, 10 bins of the top probability);
- label coverage (labelled answered rows / answered rows of the window) and label delay (time from the
  prediction to its outcome's arrival: median and 90th percentile);
- for classifiers, confidence-based performance estimation (CBPE, as NannyML's): the accuracy the model
  expects of itself from its predicted probabilities (the mean top probability, so it assumes they are
  calibrated), over every answered row with probabilities, and over the labelled rows alone, so the
  estimate can be set beside the measured accuracy once labels arrive;
- a series over time (``buckets`` slices of the window) of the headline metric, for the dashboard.

The held-out figures are the bundle's manifest metrics (``manifest.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sklearn import metrics as skm

from modelyard.bundle import Manifest
from modelyard.predlog import PredictionRecord, Route
from modelyard.registry.db import Engine
from modelyard.registry.outcomes import SqlOutcomeStore

__all__ = ["ANSWERED_ROUTES", "HIGHER_IS_BETTER", "LiveQuality", "headline_metric", "live_quality",
           "quality_metrics", "row_errors"]

ANSWERED_ROUTES = (Route.PRIMARY, Route.CANARY, Route.BATCH, Route.STREAM)
HIGHER_IS_BETTER = {"r2", "accuracy", "f1", "roc_auc", "balanced_accuracy", "precision", "recall"}
MAX_OUTCOMES = 200_000


def headline_metric(task: str) -> str:
    return "mae" if task == "regression" else "accuracy"


@dataclass
class LiveQuality:
    model: str
    version: int
    task: str
    since: str
    until: str
    labelled: int = 0
    answered_rows: int | None = None
    coverage: float | None = None
    delay_p50_s: float | None = None
    delay_p90_s: float | None = None
    late: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    heldout: dict[str, float] = field(default_factory=dict)
    estimated: dict[str, float] = field(default_factory=dict)
    """CBPE: ``accuracy`` over the answered rows with probabilities (``rows``), ``accuracy_labelled`` over the
    labelled rows with probabilities, the same rows ``metrics["accuracy"]`` can be compared with."""
    series: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _positive(classes: Sequence[Any]) -> Any:
    return sorted(classes, key=str)[1]


def quality_metrics(task: str, actual: Sequence[Any], predicted: Sequence[Any],
                    probabilities: Sequence[Sequence[float]] | None = None,
                    classes: Sequence[Any] | None = None) -> dict[str, float]:
    """The live metrics of one set of labelled rows (sklearn.metrics); empty for no rows."""
    if not actual:
        return {}
    out: dict[str, float | None] = {}
    if task == "regression":
        y = np.asarray(actual, dtype="float64")
        p = np.asarray(predicted, dtype="float64")
        ok = np.isfinite(p)
        y, p = y[ok], p[ok]
        if not len(y):
            return {}
        out["mae"] = float(skm.mean_absolute_error(y, p))
        out["rmse"] = float(np.sqrt(skm.mean_squared_error(y, p)))
        out["r2"] = _finite(float(skm.r2_score(y, p))) if len(y) > 1 and np.ptp(y) > 0 else None
        return {k: v for k, v in out.items() if v is not None}
    y_text = np.asarray([str(a) for a in actual])
    p_text = np.asarray([str(a) for a in predicted])
    out["accuracy"] = float(skm.accuracy_score(y_text, p_text))
    labels = sorted(set(y_text) | set(p_text) | {str(c) for c in classes or ()})
    if len(labels) == 2:
        out["f1"] = float(skm.f1_score(y_text, p_text, pos_label=labels[1], average="binary", zero_division=0))
    else:
        out["f1"] = float(skm.f1_score(y_text, p_text, average="macro", labels=labels, zero_division=0))
    if probabilities is not None and classes and len(probabilities) == len(actual):
        proba = np.asarray(probabilities, dtype="float64")
        names = [str(c) for c in classes]
        if proba.ndim == 2 and proba.shape[1] == len(names) and set(y_text) <= set(names):
            out.update(_proba_metrics(y_text, proba, names))
    return {k: v for k, v in out.items() if v is not None}


def _proba_metrics(y: np.ndarray, proba: np.ndarray, names: list[str]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    if len(set(y)) > 1:
        if len(names) == 2:
            pos = names.index(sorted(names)[1])
            out["roc_auc"] = float(skm.roc_auc_score(y == names[pos], proba[:, pos]))
        else:
            out["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=names))
    out["log_loss"] = float(skm.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=names))
    top = proba.max(axis=1)
    correct = np.asarray(names)[proba.argmax(axis=1)] == y
    out["ece"] = expected_calibration_error(top, correct)
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    """Sum over confidence bins of (share of rows) * |accuracy - mean confidence|."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(float(correct[mask].mean()) - float(confidence[mask].mean()))
    return float(total)


def row_errors(task: str, actual: Sequence[Any], predicted: Sequence[Any]) -> np.ndarray:
    """One loss per labelled row (absolute error; 0/1 for a wrong class): what canary tests compare."""
    if task == "regression":
        diff: np.ndarray = np.abs(np.asarray(actual, dtype="float64") - np.asarray(predicted, dtype="float64"))
        return diff
    return np.asarray([float(str(a) != str(p)) for a, p in zip(actual, predicted, strict=True)])


def _row_probabilities(records: Sequence[PredictionRecord]) -> list[list[float]]:
    out: list[list[float]] = []
    for r in records:
        proba = (r.meta or {}).get("probabilities")
        if r.error is None and isinstance(proba, list):
            out.extend(p for p in proba if isinstance(p, list) and p)
    return out


def live_quality(engine: Engine, manifest: Manifest, model: str, version: int, since: datetime,
                 until: datetime, records: Sequence[PredictionRecord] | None = None,
                 buckets: int = 12) -> LiveQuality:
    """Quality of ``version`` on the outcomes of its answers in the window; ``records`` (the window's logged
    records of this version) give the coverage and the CBPE estimate."""
    task = manifest.task
    classes = list(manifest.output_schema.classes or [])
    q = LiveQuality(model, version, task, since.isoformat(), until.isoformat(),
                    heldout={k: float(v) for k, v in (manifest.metrics or {}).items()
                             if isinstance(v, int | float)})
    rows = SqlOutcomeStore(engine).select(model, since=since, until=until, version=version,
                                          routes=[str(r) for r in ANSWERED_ROUTES], limit=MAX_OUTCOMES)
    q.labelled = len(rows)
    q.late = sum(bool(r["late"]) for r in rows)
    if records is not None:
        answered = [r for r in records if r.route in ANSWERED_ROUTES and r.error is None
                    and int(r.version) == version]
        q.answered_rows = sum(len(r.values) for r in answered)
        q.coverage = min(q.labelled / q.answered_rows, 1.0) if q.answered_rows else None
        if task == "classification":
            proba = _row_probabilities(answered)
            if proba:
                q.estimated["accuracy"] = float(np.mean([max(p) for p in proba]))
                q.estimated["rows"] = float(len(proba))
    if not rows:
        return q
    delays = [(r["received_at"] - r["predicted_at"]).total_seconds() for r in rows]
    q.delay_p50_s = float(np.quantile(delays, 0.5))
    q.delay_p90_s = float(np.quantile(delays, 0.9))
    actual, predicted = [r["actual"] for r in rows], [r["predicted"] for r in rows]
    labelled_proba = [r["probabilities"] for r in rows]
    with_proba = all(isinstance(p, list) for p in labelled_proba)
    q.metrics = quality_metrics(task, actual, predicted, labelled_proba if with_proba else None, classes)
    if task == "classification":
        tops = [max(p) for p in labelled_proba if isinstance(p, list) and p]
        if tops:
            q.estimated["accuracy_labelled"] = float(np.mean(tops))
    q.series = _series(task, rows, since, until, buckets)
    return q


def _series(task: str, rows: list[dict[str, Any]], since: datetime, until: datetime,
            buckets: int) -> list[dict[str, Any]]:
    """The headline metric per slice of the window (slices without labelled rows are left out)."""
    step = (until - since) / max(buckets, 1)
    if step <= timedelta(0):
        return []
    name = headline_metric(task)
    slices: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        slices.setdefault(min(int((r["predicted_at"] - since) / step), buckets - 1), []).append(r)
    out = []
    for i, part in sorted(slices.items()):
        figures = quality_metrics(task, [r["actual"] for r in part], [r["predicted"] for r in part])
        out.append({"t": (since + step * i).isoformat(), "n": len(part), "metric": name,
                    "value": figures.get(name)})
    return out
