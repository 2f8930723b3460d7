"""Summary statistics of a data set, kept in the bundle as the reference that drift is measured against.

Numeric columns are binned on the reference's own quantiles (so PSI compares like with like); categorical
columns keep their frequencies. The same profile describes inputs and predictions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

N_BINS = 10
MAX_LEVELS = 50


def profile_series(series: pd.Series, *, categorical: bool | None = None) -> dict[str, Any]:
    if categorical is None:
        categorical = not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
    n = len(series)
    nulls = int(series.isna().sum())
    if categorical:
        counts = series.dropna().astype(str).value_counts()
        top = counts.iloc[:MAX_LEVELS]
        total = max(int(counts.sum()), 1)
        freqs = {str(k): float(v) / total for k, v in top.items()}
        other = 1.0 - sum(freqs.values())
        return {"kind": "categorical", "count": n, "null_fraction": nulls / max(n, 1),
                "frequencies": freqs, "other_fraction": max(other, 0.0)}
    values = series.dropna().to_numpy(dtype="float64")
    if len(values) == 0:
        return {"kind": "numeric", "count": n, "null_fraction": 1.0 if n else 0.0, "edges": [], "fractions": []}
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return {
        "kind": "numeric",
        "count": n,
        "null_fraction": nulls / max(n, 1),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "quantiles": {str(q): float(np.quantile(values, q)) for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)},
        "edges": [float(e) for e in edges],
        "fractions": [float(c) / len(values) for c in counts],
        "sample": [float(v) for v in np.sort(_sample(values, 500))],
    }


def _sample(values: np.ndarray, n: int) -> np.ndarray:
    """A seeded sample kept for the KS test (the profile itself must not depend on chance)."""
    return np.random.default_rng(0).choice(values, min(len(values), n), replace=False)


def profile_frame(frame: pd.DataFrame, categorical: set[str] | None = None) -> dict[str, dict[str, Any]]:
    cats = categorical or set()
    return {str(c): profile_series(frame[c], categorical=(c in cats) or None) for c in frame.columns}
