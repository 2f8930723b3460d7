"""Validated rows as one array per column, built without a DataFrame when the input allows it.

Turning a list of dicts into a DataFrame and back costs more than an ONNX predict of a few rows. For the
common, clean case (every row a dict with every column; numbers are ``int``/``float``/``None``; categories
are ``str``/``None``) the columns are parsed straight into numpy arrays. Anything else (a missing column,
a string in a numeric column, a bool, an unseen category under ``reject``, a null where none is allowed)
goes through ``InputSchema.validate_rows``, so every error is exactly the one ``schema.py`` gives, and the
values of clean input are exactly the ones it would produce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

from modelyard.schema import InputSchema, Rows, derived

_NUMBER_TYPES = frozenset({int, float, type(None)})
_CATEGORY_TYPES = frozenset({str, type(None)})
_INFINITIES = (float("inf"), float("-inf"))


class Columns:
    """Validated rows: the schema's columns, in order, as arrays of equal length (``data``).

    A one-row request's columns (``one_row``) keep their values as scalars until an array is asked for: a
    micro-batch of one-row requests then builds each column once, from every request's value
    (``concat``), instead of making one one-element array per column per request and joining them.
    """

    __slots__ = ("_data", "_row", "n_rows")

    def __init__(self, data: dict[str, np.ndarray], n_rows: int) -> None:
        self._data: dict[str, np.ndarray] | None = data
        self._row: tuple[list[Any], _Dtypes] | None = None
        self.n_rows = n_rows

    @classmethod
    def one_row(cls, values: list[Any], dtypes: _Dtypes) -> Columns:
        """One row: ``values`` in the order of ``dtypes`` (each column's name and numpy dtype)."""
        columns = cls.__new__(cls)
        columns._data, columns._row, columns.n_rows = None, (values, dtypes), 1
        return columns

    @property
    def row(self) -> dict[str, Any] | None:
        """A one-row request's values by column while no array has been made of them; ``None`` otherwise."""
        if self._row is None or self._data is not None:
            return None
        values, dtypes = self._row
        return {name: v for v, (name, _) in zip(values, dtypes, strict=True)}

    @property
    def data(self) -> dict[str, np.ndarray]:
        if self._data is None:
            assert self._row is not None
            values, dtypes = self._row
            self._data = {name: np.array((v,), dtype=dtype) for v, (name, dtype) in zip(values, dtypes, strict=True)}
        return self._data

    def __len__(self) -> int:
        return self.n_rows

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Columns:
        return cls({str(c): frame[c].to_numpy() for c in frame.columns}, len(frame))

    def to_frame(self) -> pd.DataFrame:
        """The frame ``InputSchema.validate_rows`` would return for the same rows."""
        return pd.DataFrame(dict(self.data), index=pd.RangeIndex(self.n_rows))

    def slice(self, start: int, stop: int) -> Columns:
        stop = min(stop, self.n_rows)
        return Columns({k: v[start:stop] for k, v in self.data.items()}, max(0, stop - start))

    @classmethod
    def concat(cls, parts: Sequence[Columns]) -> Columns:
        if len(parts) == 1:
            return parts[0]
        rows = [p._row for p in parts]
        dtypes = rows[0][1] if rows[0] is not None else None
        if dtypes is not None and all(r is not None and r[1] is dtypes for r in rows):
            values = [r[0] for r in rows if r is not None]
            return cls({name: np.array([v[i] for v in values], dtype=dtype)
                        for i, (name, dtype) in enumerate(dtypes)}, len(parts))
        names = list(parts[0].data)
        data = {n: np.concatenate([p.data[n] for p in parts]) for n in names}
        return cls(data, sum(p.n_rows for p in parts))


_Dtypes = tuple[tuple[str, Any], ...]


def _column_dtypes(schema: InputSchema) -> _Dtypes:
    """Each column's name and array dtype: float64 for numbers, object for categories."""
    return tuple((c.name, np.float64 if c.kind == "numeric" else object) for c in schema.columns)


def validate_columns(schema: InputSchema, rows: Rows) -> Columns:
    """Validate ``rows`` (a DataFrame, a list of dicts or one dict) into ``Columns``."""
    if isinstance(rows, pd.DataFrame):
        parsed = _parse_frame(schema, rows)
        return parsed if parsed is not None else Columns.from_frame(schema.validate_rows(rows))
    records: Any = [rows] if isinstance(rows, Mapping) else rows
    if not isinstance(records, list):
        records = list(records)
    parsed = _parse_clean(schema, records)
    if parsed is not None:
        return parsed
    return Columns.from_frame(schema.validate_rows(records))  # raises the schema's own error


def _parse_frame(schema: InputSchema, frame: pd.DataFrame) -> Columns | None:
    """Columns of a frame whose dtypes already say what the schema checks element by element.

    Number columns of a numeric dtype and category columns of a pandas string dtype are taken as they are
    (what ``schema.py`` would make of them); any other dtype, or any value it would refuse, sends the
    whole frame through ``schema.py``.
    """
    n = len(frame)
    if n == 0 or any(c.name not in frame.columns for c in schema.columns) or frame.columns.has_duplicates:
        return None
    data: dict[str, np.ndarray] = {}
    for col in schema.columns:
        series = frame[col.name]
        if col.kind == "numeric":
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                return None
            array = series.to_numpy(dtype="float64", na_value=np.nan)
            if not np.isfinite(array).all() and (np.isinf(array).any() or not col.nullable):
                return None
        else:
            if not isinstance(series.dtype, pd.StringDtype):
                return None
            array = series.to_numpy(dtype=object, na_value=np.nan)
            if not col.nullable and series.isna().any():
                return None
            if schema.unseen_categories == "reject" and col.categories is not None:
                present = series.dropna().unique()
                if not set(present) <= set(col.categories):
                    return None
        data[col.name] = array
    return Columns(data, n)


def frame_as_is(schema: InputSchema, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The schema's columns of ``frame`` unconverted, when its dtypes already say every check passes.

    What the scikit-learn path feeds its pipeline: converting each column to numpy and building a new
    frame (pandas then re-encodes every string column) costs more than the pipeline's own conversion.
    Numbers of a numeric dtype are taken as they are (the pipeline casts them to float64 as
    ``schema.py`` would); categories only in a string dtype whose missing value is NaN (what
    ``schema.py`` produces). Anything else is ``None``: the caller validates and converts.
    """
    if len(frame) == 0 or frame.columns.has_duplicates or any(c.name not in frame.columns for c in schema.columns):
        return None
    for col in schema.columns:
        series = frame[col.name]
        if col.kind == "numeric":
            if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
                return None
            if pd.api.types.is_float_dtype(series):
                values = series.to_numpy()
                if not np.isfinite(values).all() and (np.isinf(values).any() or not col.nullable):
                    return None
            elif series.dtype.kind not in "iu":  # nullable Int64 and friends: pd.NA, not NaN
                return None
        else:
            dtype = series.dtype
            if not isinstance(dtype, pd.StringDtype) or not (isinstance(dtype.na_value, float)
                                                              and np.isnan(dtype.na_value)):
                return None
            if not col.nullable and series.isna().any():
                return None
            if (schema.unseen_categories == "reject" and col.categories is not None
                    and not set(series.dropna().unique()) <= set(col.categories)):
                return None
    selected = frame[schema.names]
    return selected if isinstance(frame.index, pd.RangeIndex) else selected.reset_index(drop=True)


def _parse_clean(schema: InputSchema, records: list[Any]) -> Columns | None:
    """Columns for clean input; ``None`` whenever ``schema.py`` must decide (and explain)."""
    n = len(records)
    if n == 1 and type(records[0]) is dict:
        return _parse_one(schema, records[0])
    if n == 0 or not all(type(r) is dict for r in records):
        return None
    data: dict[str, np.ndarray] = {}
    names = [col.name for col in schema.columns]
    if not names:
        return Columns(data, n)
    try:  # one pass over the rows for every column (a pass per column costs several times more)
        by_column = list(zip(*map(itemgetter(*names), records), strict=True)) if len(names) > 1 else [
            tuple(r[names[0]] for r in records)]
    except KeyError:
        return None
    for col, values in zip(schema.columns, by_column, strict=True):
        kinds = set(map(type, values))
        if col.kind == "numeric":
            if not kinds <= _NUMBER_TYPES:
                return None
            try:
                array = np.array(values, dtype=np.float64)
            except (OverflowError, ValueError, TypeError):
                return None
            finite = np.isfinite(array)
            if not finite.all() and (np.isinf(array).any() or not col.nullable):
                return None
        else:
            if not kinds <= _CATEGORY_TYPES:
                return None
            array = np.array(values, dtype=object)
            if type(None) in kinds:
                if not col.nullable:
                    return None
                array[array == None] = np.nan  # noqa: E711 (elementwise: None marks a missing value)
            if schema.unseen_categories == "reject" and col.categories is not None:
                known = set(col.categories)
                if any(v not in known for v in values if v is not None):
                    return None
        data[col.name] = array
    return Columns(data, n)



def _parse_one(schema: InputSchema, record: dict[str, Any]) -> Columns | None:
    """``_parse_clean`` of one row with scalar checks, its values kept as scalars (``Columns.one_row``):
    numpy calls on one-element arrays cost more than the checks themselves (the one-row request is the
    server's most common one)."""
    values: list[Any] = []
    for col in schema.columns:
        try:
            value = record[col.name]
        except KeyError:
            return None
        kind = type(value)
        if col.kind == "numeric":
            if kind is float:
                if value != value:  # NaN: a missing value
                    if not col.nullable:
                        return None
                elif value in _INFINITIES:
                    return None
            elif kind is int:
                try:
                    value = float(value)
                except OverflowError:
                    return None
            elif value is None:
                if not col.nullable:
                    return None
                value = np.nan
            else:
                return None
            values.append(value)
        else:
            if value is None:
                if not col.nullable:
                    return None
                value = np.nan
            elif kind is not str or (schema.unseen_categories == "reject" and col.categories is not None
                                     and value not in col.categories):
                return None
            values.append(value)
    return Columns.one_row(values, derived(schema, _column_dtypes))


def slice_rows(rows: pd.DataFrame | Columns, start: int, stop: int) -> pd.DataFrame | Columns:
    if isinstance(rows, Columns):
        return rows.slice(start, stop)
    return rows.iloc[start:stop].reset_index(drop=True)


def concat_rows(parts: Sequence[pd.DataFrame | Columns]) -> pd.DataFrame | Columns:
    """One batch from validated parts (frames, ``Columns`` or a mix), rows in order."""
    if len(parts) == 1:
        return parts[0]
    if all(isinstance(p, pd.DataFrame) for p in parts):
        return pd.concat(parts, ignore_index=True)
    return Columns.concat([p if isinstance(p, Columns) else Columns.from_frame(p) for p in parts])
