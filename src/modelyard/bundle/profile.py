"""The reference profile: summary statistics of the fitting data, kept in the manifest, read by drift.

Numeric columns are binned on the reference's own quantiles (so PSI compares like with like); categorical
columns keep their frequencies. The same profile describes inputs and predictions. Written by
``profile_frame``/``profile_series`` at assembly, read back as typed fields by ``monitor/drift.py``.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

N_BINS = 10
MAX_LEVELS = 50
SAMPLE_SIZE = 500
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)

__all__ = [
    "CategoricalProfile",
    "ColumnProfile",
    "NumericProfile",
    "ReferenceProfile",
    "profile_frame",
    "profile_series",
]


class NumericProfile(BaseModel):
    """A numeric column: moments, quantiles, the bin ``edges`` with the ``fractions`` of each of the
    ``len(edges) + 1`` bins, and a seeded sorted ``sample`` for the KS test."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["numeric"] = "numeric"
    count: int
    null_fraction: float = 0.0
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    quantiles: dict[str, float] = Field(default_factory=dict)
    edges: list[float] = Field(default_factory=list)
    fractions: list[float] = Field(default_factory=list)
    sample: list[float] = Field(default_factory=list)


class CategoricalProfile(BaseModel):
    """A categorical column: the frequency of its (at most ``MAX_LEVELS``) commonest levels."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["categorical"] = "categorical"
    count: int
    null_fraction: float = 0.0
    frequencies: dict[str, float] = Field(default_factory=dict)
    other_fraction: float = 0.0


ColumnProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class ReferenceProfile(BaseModel):
    """The statistics drift is measured against: every input column, and the model's own predictions."""

    model_config = ConfigDict(extra="allow")

    rows: int | None = None  # rows of the held-out reference set
    fit_rows: int | None = None  # rows the profile of ``inputs`` was computed on
    inputs: dict[str, ColumnProfile] = Field(default_factory=dict)
    prediction: ColumnProfile | None = None


def profile_series(series: pd.Series, *, categorical: bool | None = None) -> NumericProfile | CategoricalProfile:
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
        return CategoricalProfile(count=n, null_fraction=nulls / max(n, 1), frequencies=freqs,
                                  other_fraction=max(other, 0.0))
    values = series.dropna().to_numpy(dtype="float64")
    if len(values) == 0:
        return NumericProfile(count=n, null_fraction=1.0 if n else 0.0)
    edges = np.unique(np.quantile(values, np.linspace(0, 1, N_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return NumericProfile(
        count=n,
        null_fraction=nulls / max(n, 1),
        mean=float(values.mean()),
        std=float(values.std()),
        min=float(values.min()),
        max=float(values.max()),
        quantiles={str(q): float(np.quantile(values, q)) for q in QUANTILES},
        edges=[float(e) for e in edges],
        fractions=[float(c) / len(values) for c in counts],
        sample=[float(v) for v in np.sort(_sample(values, SAMPLE_SIZE))],
    )


def _sample(values: np.ndarray, n: int) -> np.ndarray:
    """A seeded sample kept for the KS test (the profile itself must not depend on chance)."""
    return np.random.default_rng(0).choice(values, min(len(values), n), replace=False)


def profile_frame(frame: pd.DataFrame, categorical: set[str] | None = None
                  ) -> dict[str, NumericProfile | CategoricalProfile]:
    cats = categorical or set()
    return {str(c): profile_series(frame[c], categorical=(c in cats) or None) for c in frame.columns}
