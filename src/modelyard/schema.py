"""The input and output schema of a model: inferred from training data, enforced on every request.

Validation lives here and only here. It is vectorized (whole columns at a time) so that checking 100k rows
costs about as much as one pandas conversion, and a violation names the row and the column.

Unseen categories: with the default policy ``"allow"`` a category the model never saw is passed on and the
one-hot encoder maps it to all zeros (the monitor counts it); with ``"reject"`` it is a ``SchemaError``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from modelyard.errors import SchemaError

Rows: TypeAlias = pd.DataFrame | Mapping[str, Any] | Iterable[Mapping[str, Any]]
MAX_CATEGORIES_RECORDED = 1000
_FLOAT_MAX = int(np.finfo(np.float64).max)


class ColumnSchema(BaseModel):
    """One input column as the model saw it in training."""

    name: str
    kind: Literal["numeric", "categorical"]
    dtype: str
    nullable: bool = False
    categories: list[str] | None = None
    min: float | None = None
    max: float | None = None


class InputSchema(BaseModel):
    """The columns a model takes, in order, and how strictly unseen categories are treated."""

    columns: list[ColumnSchema]
    unseen_categories: Literal["allow", "reject"] = "allow"

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> ColumnSchema:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @classmethod
    def infer(
        cls,
        frame: pd.DataFrame,
        *,
        categorical: Iterable[str] | None = None,
        unseen_categories: Literal["allow", "reject"] = "allow",
    ) -> InputSchema:
        forced = set(categorical or ())
        columns: list[ColumnSchema] = []
        for name in frame.columns:
            series = frame[name]
            nullable = bool(series.isna().any())
            is_numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
            if is_numeric and str(name) not in forced:
                values = series.dropna()
                columns.append(
                    ColumnSchema(
                        name=str(name),
                        kind="numeric",
                        dtype=str(series.dtype),
                        nullable=nullable,
                        min=float(values.min()) if len(values) else None,
                        max=float(values.max()) if len(values) else None,
                    )
                )
            else:
                cats = sorted({str(v) for v in series.dropna().unique()})
                columns.append(
                    ColumnSchema(
                        name=str(name),
                        kind="categorical",
                        dtype="object",
                        nullable=nullable,
                        categories=cats if len(cats) <= MAX_CATEGORIES_RECORDED else None,
                    )
                )
        return cls(columns=columns, unseen_categories=unseen_categories)

    def validate_rows(self, rows: Rows) -> pd.DataFrame:
        """Return a frame with exactly the schema's columns, in order, with the training dtypes."""
        frame = self._to_frame(rows)
        out: dict[str, Any] = {}
        for col in self.columns:
            series = frame[col.name]
            if col.kind == "numeric":
                out[col.name] = _numeric(series, col)
            else:
                out[col.name] = _categorical(series, col, self.unseen_categories)
        return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))

    def _to_frame(self, rows: Rows) -> pd.DataFrame:
        if isinstance(rows, pd.DataFrame):
            missing = [n for n in self.names if n not in rows.columns]
            if missing:
                raise SchemaError(f"missing column '{missing[0]}'", field=missing[0], row=None)
            return rows.reset_index(drop=True)
        if isinstance(rows, Mapping):
            rows = [rows]
        records = list(rows)
        if not records:
            raise SchemaError("no rows to predict", field="instances")
        required = self.names
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise SchemaError(
                    f"row {i} is a {type(record).__name__}, expected an object of column values",
                    field="instances",
                    row=i,
                )
            if len(record) < len(required) or any(k not in record for k in required):
                name = next(k for k in required if k not in record)
                raise SchemaError(f"row {i} is missing column '{name}'", field=name, row=i)
        return pd.DataFrame.from_records(records, columns=required)


def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _numeric(series: pd.Series, col: ColumnSchema) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series):
        series = series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        values: np.ndarray = series.to_numpy(dtype="float64", na_value=np.nan)
    else:
        raw = series.to_numpy(dtype=object)
        bad_type = np.fromiter(
            (isinstance(v, (bool, np.bool_, list, dict)) for v in raw), dtype=bool, count=len(raw)
        )
        if bad_type.any():
            i = _first_bad(bad_type)
            raise SchemaError(
                f"column '{col.name}' row {i}: expected a number, got {type(raw[i]).__name__}",
                field=col.name,
                row=i,
            )
        too_big = np.fromiter((isinstance(v, int) and not -_FLOAT_MAX <= v <= _FLOAT_MAX for v in raw),
                              dtype=bool, count=len(raw))
        if too_big.any():  # pandas would raise OverflowError: a caller's number, so a SchemaError
            i = _first_bad(too_big)
            raise SchemaError(f"column '{col.name}' row {i}: the number is too large (beyond a 64-bit float)",
                              field=col.name, row=i)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        unparsable = np.isnan(values) & series.notna().to_numpy()
        if unparsable.any():
            i = _first_bad(unparsable)
            raise SchemaError(
                f"column '{col.name}' row {i}: {raw[i]!r} is not a number", field=col.name, row=i
            )
    if np.isinf(values).any():
        i = _first_bad(np.isinf(values))
        raise SchemaError(f"column '{col.name}' row {i}: infinite values are not accepted", field=col.name, row=i)
    if not col.nullable:
        nulls = np.isnan(values)
        if nulls.any():
            i = _first_bad(nulls)
            raise SchemaError(
                f"column '{col.name}' row {i}: a value is required (it was never missing in training)",
                field=col.name,
                row=i,
            )
    return values


def _categorical(series: pd.Series, col: ColumnSchema, policy: str) -> np.ndarray:
    raw = series.to_numpy(dtype=object)
    nulls = pd.isna(series).to_numpy()
    bad_type = np.fromiter((isinstance(v, (list, dict)) for v in raw), dtype=bool, count=len(raw))
    if bad_type.any():
        i = _first_bad(bad_type)
        raise SchemaError(
            f"column '{col.name}' row {i}: expected a category, got {type(raw[i]).__name__}",
            field=col.name,
            row=i,
        )
    if nulls.any() and not col.nullable:
        i = _first_bad(nulls)
        raise SchemaError(
            f"column '{col.name}' row {i}: a value is required (it was never missing in training)",
            field=col.name,
            row=i,
        )
    values: np.ndarray = raw.astype(str).astype(object)
    values[nulls] = np.nan
    if policy == "reject" and col.categories is not None:
        unseen = ~nulls & ~np.isin(values, np.asarray(col.categories, dtype=object))
        if unseen.any():
            i = _first_bad(unseen)
            raise SchemaError(
                f"column '{col.name}' row {i}: category {values[i]!r} was not seen in training "
                f"(known: {', '.join(col.categories[:10])})",
                field=col.name,
                row=i,
            )
    return values


class OutputSchema(BaseModel):
    """What a model returns: a number per row, or a class label (and probabilities) per row."""

    task: Literal["regression", "classification"]
    target: str | None = None
    dtype: str = "float64"
    classes: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
