"""Estimators the serving rollout tests publish: importable by a server subprocess, so their pickles load.

Each wraps a fitted house-price pipeline. Only numpy and scikit-learn are imported here: the server imports
this module when it unpickles a bundle.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

SENTINEL_COLUMN = "crime_index"  # never negative in the generated houses: a negative value is a trigger


class Offset(RegressorMixin, BaseEstimator):
    """The base's answer plus ``delta``: a shadow whose outputs cannot be mistaken for the primary's."""

    def __init__(self, base: Any = None, delta: float = 1e6) -> None:
        self.base = base
        self.delta = delta

    def fit(self, X: Any, y: Any = None) -> Offset:
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.asarray(self.base.predict(X), dtype="float64") + self.delta


class FailsOnSentinel(RegressorMixin, BaseEstimator):
    """The base's answers, but raises for any batch holding a row whose ``crime_index`` is negative."""

    def __init__(self, base: Any = None) -> None:
        self.base = base

    def fit(self, X: Any, y: Any = None) -> FailsOnSentinel:
        return self

    def predict(self, X: Any) -> np.ndarray:
        if (np.asarray(X[SENTINEL_COLUMN], dtype="float64") < 0).any():
            raise RuntimeError("canary bug: a negative crime index")
        return np.asarray(self.base.predict(X))


class Slow(RegressorMixin, BaseEstimator):
    """The base's answers after ``seconds`` of sleep per call: a shadow that cannot keep up."""

    def __init__(self, base: Any = None, seconds: float = 0.2) -> None:
        self.base = base
        self.seconds = seconds

    def fit(self, X: Any, y: Any = None) -> Slow:
        return self

    def predict(self, X: Any) -> np.ndarray:
        time.sleep(self.seconds)
        return np.asarray(self.base.predict(X))
