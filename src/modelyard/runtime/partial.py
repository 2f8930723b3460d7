"""Validate a batch whose bad rows must be set aside rather than fail the whole batch (batch and stream).

The schema names only the first bad row of a column, so a failing batch drops that row and bisects the
rest: a clean batch costs one vectorized validation, a batch with k bad rows about k·log(n).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from modelyard.errors import SchemaError
from modelyard.runtime.predictor import Model


@dataclass
class PartialValidation:
    frame: pd.DataFrame | None  # the validated good rows, in ``positions`` order
    positions: np.ndarray  # input positions of the rows in ``frame``
    rejected: list[tuple[int, SchemaError]]  # (input position, why), sorted by position


def validate_partial(model: Model, rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> PartialValidation:
    """Split ``rows`` into validated good rows and rejected ones.

    A problem that is no single row's fault (a missing column in a DataFrame) raises ``SchemaError``.
    """
    if isinstance(rows, pd.DataFrame):
        frame = rows

        def subset(positions: np.ndarray) -> Any:
            return frame.iloc[positions]
    else:
        records = list(rows)

        def subset(positions: np.ndarray) -> Any:
            return [records[i] for i in positions]

    good: list[tuple[np.ndarray, pd.DataFrame]] = []
    bad: list[tuple[int, SchemaError]] = []

    def walk(positions: np.ndarray) -> None:
        if len(positions) == 0:
            return
        try:
            good.append((positions, model.validate(subset(positions))))
            return
        except SchemaError as exc:
            if exc.row is None or exc.row >= len(positions):
                raise
            bad.append((int(positions[exc.row]), exc))
            rest = np.delete(positions, exc.row)
        mid = len(rest) // 2
        walk(rest[:mid])
        walk(rest[mid:])

    walk(np.arange(len(rows)))
    bad.sort(key=lambda item: item[0])
    if not good:
        return PartialValidation(None, np.empty(0, dtype=int), bad)
    positions = np.concatenate([p for p, _ in good])
    validated = pd.concat([f for _, f in good], ignore_index=True) if len(good) > 1 else good[0][1]
    return PartialValidation(validated, positions, bad)
