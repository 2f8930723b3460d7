"""Drift: a window of logged inputs and predictions against the bundle's reference statistics.

PSI (population stability index) compares bin fractions: numeric values are binned on the reference's own
quantile edges (``bundle/profile.py`` stored them), categories on the reference's levels plus one bin for the rest.
The KS statistic compares a numeric column's distribution with the reference's stored sample. By the usual
reading, PSI < 0.1 is stable, 0.1-0.25 a moderate shift and > 0.25 a large one.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from modelyard.bundle import CategoricalProfile, Manifest, NumericProfile, ReferenceProfile
from modelyard.monitor.window import Window

PREDICTION = "__prediction__"
OTHER = "__other__"
EPS = 1e-4  # floor for empty bins: PSI stays finite when a bin is empty on one side


@dataclass
class FeatureDrift:
    """How one column (or the predictions) moved; ``labels``/``reference``/``current`` are the bins."""

    feature: str
    kind: str
    n: int
    psi: float | None
    ks: float | None = None
    missing_reference: float = 0.0
    missing_current: float = 0.0
    labels: list[str] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    current: list[float] = field(default_factory=list)


@dataclass
class DriftReport:
    model: str
    version: int
    rows: int
    features: dict[str, FeatureDrift]
    prediction: FeatureDrift | None

    def all(self) -> list[FeatureDrift]:
        return [*self.features.values(), *([self.prediction] if self.prediction else [])]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "rows": self.rows,
            "features": {k: asdict(v) for k, v in self.features.items()},
            "prediction": asdict(self.prediction) if self.prediction else None,
        }


def psi(reference: np.ndarray | list[float], current: np.ndarray | list[float]) -> float:
    """Sum over bins of (cur - ref) * ln(cur / ref), with empty bins floored at ``EPS``."""
    ref = np.clip(np.asarray(reference, dtype="float64"), EPS, None)
    cur = np.clip(np.asarray(current, dtype="float64"), EPS, None)
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> float:
    """The two-sample Kolmogorov-Smirnov statistic: the largest gap between the two empirical CDFs."""
    a, b = np.sort(np.asarray(reference, dtype="float64")), np.sort(np.asarray(current, dtype="float64"))
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / len(a)
    cdf_b = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


def numeric_drift(feature: str, profile: NumericProfile, values: pd.Series) -> FeatureDrift:
    raw = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    present = raw[~np.isnan(raw)]
    edges = np.asarray(profile.edges, dtype="float64")
    ref_fractions = list(profile.fractions)
    out = FeatureDrift(
        feature,
        "numeric",
        len(present),
        None,
        missing_reference=profile.null_fraction,
        missing_current=float(np.isnan(raw).mean()) if len(raw) else 0.0,
        labels=_edge_labels(edges),
        reference=ref_fractions,
    )
    if len(present) == 0 or not ref_fractions:
        return out
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    out.current = [float(c) / len(present) for c in counts]
    out.psi = psi(ref_fractions, out.current)
    if profile.sample:
        out.ks = ks_statistic(np.asarray(profile.sample), present)
    return out


def categorical_drift(feature: str, profile: CategoricalProfile, values: pd.Series) -> FeatureDrift:
    freqs = profile.frequencies
    present = values.dropna().astype(str)
    labels = [*freqs, OTHER]
    reference = [*freqs.values(), profile.other_fraction]
    out = FeatureDrift(
        feature,
        "categorical",
        len(present),
        None,
        missing_reference=profile.null_fraction,
        missing_current=float(values.isna().mean()) if len(values) else 0.0,
        labels=labels,
        reference=reference,
    )
    if len(present) == 0 or not freqs:
        return out
    counts = present.value_counts()
    known = [float(counts.get(level, 0)) / len(present) for level in freqs]
    out.current = [*known, max(1.0 - sum(known), 0.0)]
    out.psi = psi(reference, out.current)
    return out


def column_drift(feature: str, profile: NumericProfile | CategoricalProfile, values: pd.Series) -> FeatureDrift:
    if isinstance(profile, CategoricalProfile):
        return categorical_drift(feature, profile, values)
    return numeric_drift(feature, profile, values)


def evaluate_drift(reference: ReferenceProfile | Manifest | None, window: Window) -> DriftReport:
    """Every input column the reference profiled, and the predictions, for one version's window.

    ``reference`` is the bundle's reference profile, or the manifest holding it.
    """
    if isinstance(reference, Manifest):
        reference = reference.reference
    profiles = reference or ReferenceProfile()
    frame = window.frame()
    features: dict[str, FeatureDrift] = {}
    for name, profile in profiles.inputs.items():
        values = frame[name] if name in frame.columns else pd.Series([np.nan] * len(frame), dtype="float64")
        features[name] = column_drift(name, profile, values)
    prediction = None
    if profiles.prediction is not None:
        prediction = column_drift(PREDICTION, profiles.prediction, pd.Series(window.predictions, dtype=object))
    return DriftReport(window.model, window.version, len(frame), features, prediction)


def _edge_labels(edges: np.ndarray) -> list[str]:
    if len(edges) == 0:
        return ["all"]
    fmt = "{:.3g}".format
    return [
        f"< {fmt(edges[0])}",
        *(f"{fmt(a)} - {fmt(b)}" for a, b in itertools.pairwise(edges)),
        f">= {fmt(edges[-1])}",
    ]
