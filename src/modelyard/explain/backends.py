"""The two ways attributions are computed, both by ``shap`` (no Shapley code of ours).

- ``TreeBackend``: exact TreeSHAP (``shap.TreeExplainer``, path-dependent) of the final tree ensemble on the
  matrix the fitted preprocessing made, summed back per input column (``explain/columns.py``).
- ``AgnosticBackend``: shap's model-agnostic explainers (``Exact`` up to 10 columns, ``KernelExplainer`` beyond)
  over the whole pipeline, with the bundle's reference rows as the background. Categorical columns are
  handed to shap as integer codes and decoded back before the pipeline sees them.

Both return attributions of shape (rows, input columns, outputs), base values and the model's outputs in
the same space (rows, outputs), so the caller checks ``base + sum == output`` the same way for both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import ThreadpoolController

from modelyard.errors import ExplainerUnavailableError
from modelyard.explain.columns import feature_owners, ownership_matrix, split_pipeline

SHAP_HINT = "explanations need the optional 'shap' package: pip install 'modelyard[explain]'"
_RNG_LOCK = threading.Lock()  # Kernel SHAP samples coalitions from numpy's global generator
EXACT_MAX_COLUMNS = 10


_CONTROLLER: list[ThreadpoolController] = []


def single_thread() -> Any:
    """A context holding native thread pools (OpenMP, BLAS) to one thread: HistGradientBoosting's OpenMP
    pool spinning on a one-row call made an explanation 5x slower. The controller (which scans the loaded
    libraries, ~10 ms) is made once."""
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1)


def load_shap() -> ModuleType:
    try:
        import shap
    except ImportError as exc:
        raise ExplainerUnavailableError(SHAP_HINT) from exc
    module: ModuleType = shap
    return module


class Unsupported(Exception):
    """This backend cannot explain this model (the caller falls back to the next one)."""


@dataclass
class Attributions:
    values: np.ndarray  # (rows, input columns, outputs)
    base: np.ndarray  # (rows, outputs)
    outputs: np.ndarray  # (rows, outputs): the model's own outputs in ``space``


def tolerance_of(outputs: np.ndarray) -> np.ndarray:
    tolerance: np.ndarray = 1e-6 * np.maximum(1.0, np.abs(outputs))
    return tolerance


class TreeBackend:
    kind = "tree"

    def __init__(self, pipeline: Any, inputs: list[str], task: str, probe: pd.DataFrame) -> None:
        shap = load_shap()
        self.steps_, self.estimator_ = split_pipeline(pipeline)
        owners = feature_owners(self.steps_, inputs)
        if owners is None:
            raise Unsupported("the preprocessing's output columns cannot be traced to input columns")
        self.matrix_ = ownership_matrix(owners, inputs)
        try:
            self.explainer_ = shap.TreeExplainer(self.estimator_)
        except Exception as exc:
            raise Unsupported(f"shap.TreeExplainer does not take {type(self.estimator_).__name__}: {exc}") from exc
        self.task = task
        self.space = ""
        self.space = self._find_space(probe)
        self.detail = (f"shap.TreeExplainer (exact TreeSHAP, path-dependent) on {type(self.estimator_).__name__}, "
                       f"{len(owners)} transformed columns summed back to {len(inputs)} input columns")

    def _transform(self, frame: pd.DataFrame) -> Any:
        z: Any = frame
        for step in self.steps_:
            z = step.transform(z)
        return z

    def _raw(self, z: Any) -> tuple[np.ndarray, np.ndarray]:
        dense = z.toarray() if hasattr(z, "toarray") else np.asarray(z, dtype="float64")
        sv = self.explainer_.shap_values(dense, check_additivity=False)
        sv = np.stack(sv, axis=-1) if isinstance(sv, list) else np.asarray(sv, dtype="float64")
        if sv.ndim == 2:
            sv = sv[..., None]
        base = np.broadcast_to(np.atleast_1d(np.asarray(self.explainer_.expected_value, dtype="float64")),
                               (len(dense), sv.shape[-1]))
        return sv, base

    def _candidates(self, z: Any, k: int) -> dict[str, np.ndarray]:
        est = self.estimator_
        if self.task == "regression":
            return {"raw": np.asarray(est.predict(z), dtype="float64").reshape(-1, 1)}
        proba = np.asarray(est.predict_proba(z), dtype="float64")
        decision = np.asarray(est.decision_function(z), dtype="float64") if hasattr(est, "decision_function") \
            else None
        if k == 1:
            p1 = np.clip(proba[:, 1], 1e-300, 1 - 1e-16)
            logit = decision.reshape(-1) if decision is not None and decision.ndim == 1 else np.log(p1 / (1 - p1))
            return {"probability": proba[:, 1:2], "log_odds": logit.reshape(-1, 1)}
        out = {"probability": proba}
        if decision is not None and decision.shape == proba.shape:
            out["margin"] = decision
        return out

    def _find_space(self, probe: pd.DataFrame) -> str:
        z = self._transform(probe)
        sv, base = self._raw(z)
        total = base + sv.sum(axis=1)
        for space, target in self._candidates(z, sv.shape[-1]).items():
            if target.shape == total.shape and bool(np.all(np.abs(total - target) <= tolerance_of(target))):
                return space
        raise Unsupported("TreeSHAP values do not add up to the model's output in any known space")

    def attributions(self, frame: pd.DataFrame) -> Attributions:
        z = self._transform(frame)
        sv, base = self._raw(z)
        values = np.einsum("nfk,fc->nck", sv, self.matrix_)
        return Attributions(values, np.array(base), self._candidates(z, sv.shape[-1])[self.space])


class AgnosticBackend:
    """shap's model-agnostic explainer over the whole pipeline, the reference rows as background."""

    def __init__(self, pipeline: Any, background: pd.DataFrame, task: str, seed: int = 0,
                 nsamples: int | str = "auto") -> None:
        shap = load_shap()
        self.nsamples = nsamples  # Kernel SHAP's coalitions per row ("auto": 2 * columns + 2048)
        self.pipeline_ = pipeline
        self.task = task
        self.seed = seed
        self.columns_ = [str(c) for c in background.columns]
        self.dtypes_ = {c: background[c].dtype for c in self.columns_}
        self.categorical_ = [c for c in self.columns_ if not pd.api.types.is_numeric_dtype(self.dtypes_[c])]
        self.vocab_: dict[str, dict[Any, int]] = {c: {} for c in self.categorical_}
        self.lock_ = threading.Lock()
        bg = self.encode(background)
        if len(self.columns_) <= EXACT_MAX_COLUMNS:  # every coalition: exact Shapley values on the background
            self.explainer_: Any = shap.explainers.Exact(self._predict, shap.maskers.Independent(bg, len(bg)))
            self.kind = "exact"
        else:  # Kernel SHAP: no JIT compilation (the permutation explainer's costs ~a minute per process)
            self.explainer_ = shap.KernelExplainer(self._predict, bg)
            self.kind = "kernel"
        self.space = "probability" if task == "classification" else "raw"
        self.detail = (f"shap.{type(self.explainer_).__name__} (model-agnostic) over the whole pipeline, "
                       f"background {len(bg)} reference rows")

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.columns_)), dtype="float64")
        with self.lock_:
            for j, c in enumerate(self.columns_):
                values = frame[c].to_numpy()
                if c not in self.vocab_:
                    out[:, j] = np.asarray(values, dtype="float64")
                    continue
                vocab = self.vocab_[c]
                for i, v in enumerate(values):
                    out[i, j] = np.nan if pd.isna(v) else vocab.setdefault(v, len(vocab))
        return out

    def decode(self, x: np.ndarray) -> pd.DataFrame:
        data: dict[str, Any] = {}
        for j, c in enumerate(self.columns_):
            col = x[:, j]
            if c in self.vocab_:
                lookup = np.array([None, *self.vocab_[c]], dtype=object)
                codes = np.where(np.isnan(col), -1, col).astype(np.int64) + 1
                data[c] = pd.array(lookup[codes], dtype=self.dtypes_[c])
            else:
                data[c] = col
        return pd.DataFrame(data, columns=self.columns_)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        frame = self.decode(np.asarray(x, dtype="float64"))
        if self.task == "classification":
            return np.asarray(self.pipeline_.predict_proba(frame), dtype="float64")
        return np.asarray(self.pipeline_.predict(frame), dtype="float64")

    def _one_row(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "exact":
            res = self.explainer_(x, silent=True)
            return np.asarray(res.values, dtype="float64"), np.asarray(res.base_values, dtype="float64")
        values = self.explainer_.shap_values(x, nsamples=self.nsamples, l1_reg=False, silent=True)
        values = np.stack(values, axis=-1) if isinstance(values, list) else np.asarray(values, dtype="float64")
        return values, np.atleast_1d(np.asarray(self.explainer_.expected_value, dtype="float64"))

    def attributions(self, frame: pd.DataFrame) -> Attributions:
        x = self.encode(frame)
        values, base = [], []
        for i in range(len(x)):  # one seeded call per row: a row's explanation never depends on its batch
            with _RNG_LOCK:
                np.random.seed(self.seed)
                phi, b = self._one_row(x[i:i + 1])
            values.append(phi.reshape(len(self.columns_), -1))
            base.append(b.reshape(-1))
        outputs = self._predict(x)
        return Attributions(np.stack(values), np.stack(base), outputs.reshape(len(x), -1))
