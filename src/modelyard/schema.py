"""The input and output schema of a model: inferred from training data, enforced on every request.

Validation lives here and only here. It is vectorized (whole columns at a time) so that checking 100k rows
costs about as much as one pandas conversion. Every violation is collected: the ``SchemaError`` lists each
problem with its row, column and reason.

Unseen categories: with the default policy ``"allow"`` a category the model never saw is passed on and the
one-hot encoder maps it to all zeros (the monitor counts it); with ``"reject"`` it is a ``SchemaError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from modelyard.errors import SchemaError, SchemaProblem

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
        """Return a frame with exactly the schema's columns, in order, with the training dtypes.

        Every problem is collected before raising: one ``SchemaError`` lists each bad row of each column
        (a row whose shape is wrong, not an object or missing a column, is not checked further).
        """
        frame = self._to_frame(rows)
        out: dict[str, Any] = {}
        problems: list[SchemaProblem] = []
        for col in self.columns:
            series = frame[col.name]
            if col.kind == "numeric":
                out[col.name] = _numeric(series, col, problems)
            else:
                out[col.name] = _categorical(series, col, self.unseen_categories, problems)
        if problems:
            raise SchemaError(problems=problems)
        return pd.DataFrame(out, index=pd.RangeIndex(len(frame)))

    def _to_frame(self, rows: Rows) -> pd.DataFrame:
        if isinstance(rows, pd.DataFrame):
            missing = [n for n in self.names if n not in rows.columns]
            if missing:
                raise SchemaError(problems=[_missing(n, None) for n in missing])
            return rows.reset_index(drop=True)
        if isinstance(rows, Mapping):
            rows = [rows]
        records = list(rows)
        if not records:
            raise SchemaError("no rows to predict", field="instances")
        required = self.names
        problems: list[SchemaProblem] = []
        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                problems.append(SchemaProblem(f"a {type(record).__name__}, expected an object of column values",
                                              "instances", i, "row"))
            elif len(record) < len(required) or any(k not in record for k in required):
                problems.extend(_missing(k, i) for k in required if k not in record)
        if problems:
            raise SchemaError(problems=problems)
        return pd.DataFrame.from_records(records, columns=required)


def _missing(name: str, row: int | None) -> SchemaProblem:
    return SchemaProblem(f"missing column '{name}'", name, row, "row")


def _flag(problems: list[SchemaProblem], col: ColumnSchema, mask: np.ndarray, reason: Callable[[int], str],
          seen: np.ndarray) -> None:
    """Record a problem for every row of ``mask`` not already flagged in this column; mark them seen."""
    fresh = mask & ~seen
    problems.extend(SchemaProblem(reason(i), col.name, i, "value") for i in np.flatnonzero(fresh).tolist())
    seen |= fresh


def _numeric(series: pd.Series, col: ColumnSchema, problems: list[SchemaProblem]) -> np.ndarray:
    found: list[SchemaProblem] = []
    seen = np.zeros(len(series), dtype=bool)
    if pd.api.types.is_bool_dtype(series):
        series = series.astype("float64")
    values: np.ndarray
    if pd.api.types.is_numeric_dtype(series):
        values = series.to_numpy(dtype="float64", na_value=np.nan)
    else:
        raw = series.to_numpy(dtype=object)
        bad_type = np.fromiter(
            (isinstance(v, (bool, np.bool_, list, dict)) for v in raw), dtype=bool, count=len(raw)
        )
        _flag(found, col, bad_type, lambda i: f"expected a number, got {type(raw[i]).__name__}", seen)
        too_big = np.fromiter((isinstance(v, int) and not -_FLOAT_MAX <= v <= _FLOAT_MAX for v in raw),
                              dtype=bool, count=len(raw))
        # pandas would raise OverflowError: a caller's number, so a SchemaError
        _flag(found, col, too_big, lambda i: "the number is too large (beyond a 64-bit float)", seen)
        if seen.any():  # what is already wrong is not parsed
            cleaned = raw.copy()
            cleaned[seen] = None
            series = pd.Series(cleaned, index=series.index, dtype=object)
        values = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        unparsable = np.isnan(values) & series.notna().to_numpy()
        _flag(found, col, unparsable, lambda i: f"{raw[i]!r} is not a number", seen)
    _flag(found, col, np.isinf(values), lambda i: "infinite values are not accepted", seen)
    if not col.nullable:
        _flag(found, col, np.isnan(values),
              lambda i: "a value is required (it was never missing in training)", seen)
    problems.extend(sorted(found, key=lambda p: p.row or 0))
    return values


def _categorical(series: pd.Series, col: ColumnSchema, policy: str, problems: list[SchemaProblem]) -> np.ndarray:
    found: list[SchemaProblem] = []
    raw = series.to_numpy(dtype=object)
    nulls = pd.isna(series).to_numpy()
    seen = np.zeros(len(raw), dtype=bool)
    bad_type = np.fromiter((isinstance(v, (list, dict)) for v in raw), dtype=bool, count=len(raw))
    _flag(found, col, bad_type, lambda i: f"expected a category, got {type(raw[i]).__name__}", seen)
    if not col.nullable:
        _flag(found, col, nulls, lambda i: "a value is required (it was never missing in training)", seen)
    if bad_type.any():  # what is already wrong is not compared with the categories
        raw = raw.copy()
        raw[bad_type] = None
        nulls = nulls | bad_type
    values: np.ndarray = raw.astype(str).astype(object)
    values[nulls] = np.nan
    if policy == "reject" and col.categories is not None:
        known = ", ".join(col.categories[:10])
        unseen = ~nulls & ~np.isin(values, np.asarray(col.categories, dtype=object))
        _flag(found, col, unseen,
              lambda i: f"category {values[i]!r} was not seen in training (known: {known})", seen)
    problems.extend(sorted(found, key=lambda p: p.row or 0))
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


_T = TypeVar("_T")
_DERIVED: dict[tuple[int, Callable[[Any], Any]], tuple[InputSchema, Any]] = {}


def derived(schema: InputSchema, build: Callable[[InputSchema], _T]) -> _T:
    """``build(schema)``, computed once per schema object: what a hot path derives from a loaded model's
    schema (the metrics' per-feature plan, the columns' dtypes). Keyed by the object (a schema loaded again
    is derived again); bounded, cleared past 1,024 entries."""
    key = (id(schema), build)
    cached = _DERIVED.get(key)
    if cached is None or cached[0] is not schema:
        if len(_DERIVED) > 1024:
            _DERIVED.clear()
        cached = _DERIVED[key] = (schema, build(schema))
    result: _T = cached[1]
    return result
