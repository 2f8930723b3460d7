"""Explain rows of one loaded model version: one attribution per input column, checked to add up.

``explainer_for(model)`` builds (once per loaded version) a TreeSHAP explainer when the final estimator is
a tree ensemble shap knows and the preprocessing's columns trace back to input columns, else the
model-agnostic one over the whole pipeline with the bundle's reference rows as background. Every row's
``base_value + sum(attributions)`` is compared with the model's own output in the explainer's space
(the prediction for regressors; probability, log-odds or margin per class for classifiers) and the
largest error is reported next to its tolerance.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import numpy as np
import pandas as pd

from modelyard.errors import ExplainError, PayloadTooLargeError
from modelyard.explain.backends import (
    AgnosticBackend,
    Attributions,
    TreeBackend,
    Unsupported,
    single_thread,
    tolerance_of,
)
from modelyard.explain.result import OutputExplanation, RowExplanation
from modelyard.runtime import Model

log = logging.getLogger(__name__)
BACKGROUND_ROWS = 100
PROBE_ROWS = 8
MAX_ROWS = {"tree": 10_000}  # per request; the model-agnostic explainers are far slower
MAX_ROWS_AGNOSTIC = 100


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value != value:
        return None
    return value


class ModelExplainer:
    """Attributions for one model version. Built by ``explainer_for``; safe to share between threads."""

    def __init__(self, model: Model, *, background_rows: int = BACKGROUND_ROWS, seed: int = 0,
                 algorithm: str = "auto", nsamples: int | str = "auto") -> None:
        self.model = model
        self.inputs = list(model.schema.names)
        reference = model.validate(model.bundle_.reference_inputs())
        if len(reference) > background_rows:
            keep = np.sort(np.random.default_rng(seed).choice(len(reference), background_rows, replace=False))
            reference = reference.iloc[keep].reset_index(drop=True)
        self.background_ = reference
        self.tree_error: str | None = None
        self.backend_: TreeBackend | AgnosticBackend
        if algorithm in ("auto", "tree"):
            try:
                self.backend_ = TreeBackend(model.pipeline_, self.inputs, model.task, reference.head(PROBE_ROWS))
                return
            except Unsupported as exc:
                if algorithm == "tree":
                    raise ExplainError(f"{model.name} v{model.version}: no tree explainer: {exc}",
                                       model=model.name, version=model.version) from exc
                self.tree_error = str(exc)
        self.backend_ = AgnosticBackend(model.pipeline_, reference, model.task, seed=seed, nsamples=nsamples)

    @property
    def kind(self) -> str:
        """``tree``, or the model-agnostic explainer shap chose (``exact``, ``permutation``)."""
        return self.backend_.kind

    @property
    def space(self) -> str:
        return self.backend_.space

    @property
    def detail(self) -> str:
        why = f" (no tree explainer: {self.tree_error})" if self.tree_error else ""
        return self.backend_.detail + why

    @property
    def max_rows(self) -> int:
        return MAX_ROWS.get(self.kind, MAX_ROWS_AGNOSTIC)

    def attributions(self, frame: pd.DataFrame) -> Attributions:
        """Raw arrays for validated rows: values (rows, input columns, outputs), base, outputs."""
        try:
            return self.backend_.attributions(frame)
        except Exception as exc:
            raise ExplainError(f"{self.model.name} v{self.model.version}: the {self.kind} explainer failed: {exc}",
                               model=self.model.name, version=self.model.version) from exc

    def explain(self, frame: pd.DataFrame, *, first_row: int = 0) -> list[RowExplanation]:
        """One ``RowExplanation`` per row of ``frame`` (validated by ``model.validate``)."""
        if len(frame) > self.max_rows:
            raise PayloadTooLargeError(f"{len(frame)} rows: the {self.kind} explainer takes at most "  # 413
                                       f"{self.max_rows} per call", field="instances", model=self.model.name)
        # One native thread: OpenMP pools (HistGradientBoosting's predict) spinning on a one-row call cost 10x.
        with single_thread():
            att = self.attributions(frame)
            predictions = np.asarray(self.model.predict_frame(frame))
            proba = (np.asarray(self.model.pipeline_.predict_proba(frame), dtype="float64")
                     if self.model.task == "classification" else None)
        columns = {str(c): frame[c].tolist() for c in frame.columns}
        out = []
        for i in range(len(frame)):
            pred = _plain(predictions[i])
            classes = self.model.classes_
            row = RowExplanation(
                model=self.model.name, version=self.model.version, row=first_row + i,
                inputs={c: _plain(v[i]) for c, v in columns.items()}, prediction=pred,
                explainer=self.kind, explainer_detail=self.detail, space=self.space,
                outputs=self._outputs(att, i, pred),
                probabilities=None if proba is None or classes is None else
                {str(c): float(p) for c, p in zip(classes, proba[i], strict=True)},
            )
            out.append(row)
        return out

    def _outputs(self, att: Attributions, i: int, prediction: Any) -> list[OutputExplanation]:
        values, base, outputs = att.values[i], att.base[i], att.outputs[i]
        tol = tolerance_of(outputs)
        explained = []
        for k in range(values.shape[-1]):
            error = abs(float(base[k] + values[:, k].sum() - outputs[k]))
            explained.append((float(base[k]), float(outputs[k]), values[:, k], error, float(tol[k])))
        classes = self.model.classes_
        if classes is None:
            return [self._one(None, *explained[0])]
        if len(explained) == 1 and len(classes) == 2:  # one output: the positive class; derive the other
            b, v, phi, err, t = explained[0]
            if self.space == "probability":  # p(other) = 1 - p
                explained = [(1.0 - b, 1.0 - v, -phi, err, t), explained[0]]
            else:  # log-odds of the other class = -log-odds
                explained = [(-b, -v, -phi, err, t), explained[0]]
        items = [self._one(_plain(c), *e) for c, e in zip(classes, explained, strict=True)]
        items.sort(key=lambda o: 0 if o.label == prediction else 1)
        return items

    def _one(self, label: Any, base: float, value: float, phi: np.ndarray, error: float,
             tol: float) -> OutputExplanation:
        return OutputExplanation(label, base, value, {c: float(v) for c, v in zip(self.inputs, phi, strict=True)},
                                 error, tol)


_CACHE: weakref.WeakKeyDictionary[Model, ModelExplainer] = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def explainer_for(model: Model) -> ModelExplainer:
    """The explainer of a loaded version, built on first use and kept as long as the model is."""
    with _CACHE_LOCK:
        found = _CACHE.get(model)
        if found is None:
            found = _CACHE[model] = ModelExplainer(model)
            log.info("%s v%s: %s", model.name, model.version, found.detail)
        return found


def explain_rows(model: Model, rows: Any, *, first_row: int = 0) -> list[RowExplanation]:
    """Validate ``rows`` (a DataFrame, a list of dicts or one dict) against the schema and explain them."""
    return explainer_for(model).explain(model.validate(rows), first_row=first_row)
