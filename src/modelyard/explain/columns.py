"""Which input column each column of the transformed matrix comes from.

The estimator of a bundle sees the matrix the fitted preprocessing made: one-hot indicators, scaled
numbers, the columns a selection step kept. An attribution is only useful to a caller per column they
sent, so every transformed column is traced back to exactly one input column through the fitted
``ColumnTransformer`` (``transformers_`` and ``output_indices_``, names from ``get_feature_names_out``)
and the selection step's ``get_support()``. A transformer whose outputs mix several inputs (a PCA, say)
cannot be traced: ``feature_owners`` returns None and the model-agnostic explainer is used instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline


def split_pipeline(pipeline: Any) -> tuple[list[Any], Any]:
    """(the fitted transformer steps, the final estimator) of a Pipeline; ([], model) for a bare model."""
    if isinstance(pipeline, Pipeline):
        steps = [step for _, step in pipeline.steps if step not in (None, "passthrough")]
        return steps[:-1], steps[-1]
    return [], pipeline


def _columns_of(spec: Any, inputs: Sequence[str]) -> list[str] | None:
    """The input column names a ColumnTransformer entry reads (names, indices, a mask or a slice)."""
    if isinstance(spec, str):
        return [spec]
    if isinstance(spec, slice):
        return list(inputs[spec])
    if callable(spec):
        return None
    items = list(spec)
    if items and all(isinstance(i, (bool, np.bool_)) for i in items):
        return [c for c, keep in zip(inputs, items, strict=True) if keep]
    if items and all(isinstance(i, (int, np.integer)) for i in items):
        return [inputs[int(i)] for i in items]
    return [str(i) for i in items]


def _owner_of(name: str, columns: list[str]) -> str | None:
    """The input column an output name such as ``neighborhood_Old Town`` (or ``area_sqm``) belongs to."""
    if name in columns:
        return name
    prefixed = [c for c in columns if name.startswith(c + "_")]
    return max(prefixed, key=len) if prefixed else None


def _transformer_owners(transformer: Any, columns: list[str], width: int) -> list[str] | None:
    if len(columns) == 1:
        return columns * width
    try:
        names = [str(n) for n in transformer.get_feature_names_out(columns)]
    except Exception:
        return None
    owners = [_owner_of(n, columns) for n in names]
    if len(owners) != width or any(o is None for o in owners):
        return None
    return [str(o) for o in owners]


def _column_transformer_owners(ct: ColumnTransformer, inputs: list[str]) -> list[str] | None:
    width = sum(s.stop - s.start for s in ct.output_indices_.values())
    owners: list[str | None] = [None] * width
    for name, transformer, spec in ct.transformers_:
        span = ct.output_indices_.get(name)
        if span is None or span.stop == span.start or transformer == "drop":
            continue
        columns = _columns_of(spec, inputs)
        if columns is None:
            return None
        if transformer == "passthrough":
            mapped: list[str] | None = columns
        else:
            mapped = _transformer_owners(transformer, columns, span.stop - span.start)
        if mapped is None or len(mapped) != span.stop - span.start:
            return None
        owners[span] = mapped
    if any(o is None for o in owners):
        return None
    return [str(o) for o in owners]


def feature_owners(steps: list[Any], inputs: list[str]) -> list[str] | None:
    """One input column name per column the final estimator sees, or None when they cannot be traced."""
    owners: list[str] | None = list(inputs)
    for step in steps:
        if owners is None:
            return None
        if isinstance(step, ColumnTransformer):
            owners = _column_transformer_owners(step, owners)
        elif hasattr(step, "get_support"):
            support = np.asarray(step.get_support(), dtype=bool)
            if len(support) != len(owners):
                return None
            owners = [o for o, keep in zip(owners, support, strict=True) if keep]
        elif isinstance(step, Pipeline):
            owners = feature_owners([s for _, s in step.steps], owners)
        else:
            owners = _transformer_owners(step, owners, _width(step, owners))
    return owners


def _width(step: Any, owners: list[str]) -> int:
    try:
        return len(step.get_feature_names_out(owners))
    except Exception:
        return -1


def ownership_matrix(owners: list[str], inputs: list[str]) -> np.ndarray:
    """A (transformed columns x input columns) 0/1 matrix: attributions @ matrix sums them per input column."""
    index = {c: i for i, c in enumerate(inputs)}
    matrix = np.zeros((len(owners), len(inputs)))
    for j, owner in enumerate(owners):
        matrix[j, index[owner]] = 1.0
    return matrix
