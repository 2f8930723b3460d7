"""Metrics on the held-out split, by name, for regression and classification."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn import metrics as skm

from modelyard.errors import SpecError

DEFAULT_METRICS = {"regression": ["r2", "mae", "rmse"], "classification": ["accuracy", "f1", "roc_auc"]}


def _rmse(y: Any, p: Any) -> float:
    return float(np.sqrt(skm.mean_squared_error(y, p)))


REGRESSION: dict[str, Callable[[Any, Any], float]] = {
    "r2": skm.r2_score,
    "mae": skm.mean_absolute_error,
    "rmse": _rmse,
    "mse": skm.mean_squared_error,
    "mape": skm.mean_absolute_percentage_error,
    "median_ae": skm.median_absolute_error,
}
def _averaged(score: Callable[..., float]) -> Callable[[Any, Any], float]:
    """Binary: the score of the second class in sorted order (the one ``predict_proba[:, 1]`` is for)."""

    def metric(y: Any, p: Any) -> float:
        labels = np.unique(y)
        if len(labels) == 2:
            return float(score(y, p, average="binary", pos_label=labels[1]))
        return float(score(y, p, average="macro"))

    return metric


CLASSIFICATION_LABEL: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "f1": _averaged(skm.f1_score),
    "precision": _averaged(skm.precision_score),
    "recall": _averaged(skm.recall_score),
}
CLASSIFICATION_PROBA = {"roc_auc", "log_loss"}


def known_metrics(task: str) -> set[str]:
    if task == "regression":
        return set(REGRESSION)
    return set(CLASSIFICATION_LABEL) | CLASSIFICATION_PROBA


def check_metric_names(names: list[str], task: str) -> None:
    unknown = [n for n in names if n not in known_metrics(task)]
    if unknown:
        raise SpecError(
            f"metrics: unknown {task} metric {unknown[0]!r} (known: {', '.join(sorted(known_metrics(task)))})"
        )


def evaluate(pipeline: Any, X: Any, y: Any, task: str, names: list[str] | None = None) -> dict[str, float]:
    names = names or DEFAULT_METRICS[task]
    check_metric_names(names, task)
    pred = pipeline.predict(X)
    out: dict[str, float] = {}
    if task == "regression":
        for n in names:
            out[n] = float(REGRESSION[n](y, pred))
        return out
    proba = pipeline.predict_proba(X) if hasattr(pipeline, "predict_proba") else None
    for n in names:
        if n in CLASSIFICATION_LABEL:
            out[n] = float(CLASSIFICATION_LABEL[n](y, pred))
        elif proba is not None:
            if n == "roc_auc":
                out[n] = float(
                    skm.roc_auc_score(y, proba[:, 1]) if proba.shape[1] == 2
                    else skm.roc_auc_score(y, proba, multi_class="ovr")
                )
            else:
                out[n] = float(skm.log_loss(y, proba, labels=list(pipeline.classes_)))
    return out
