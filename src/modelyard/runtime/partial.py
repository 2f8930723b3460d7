"""Prediction with partial failures: one prediction or one error per row, never a failed call for bad rows.

``Model.predict_partial`` is what batch (the chunk function) and stream (the consumer) call; the server
answers a multi-row request as a whole, so it runs the same schema validation and fails on the first bad
row (a 422 naming it). Rows are validated at once; the schema names the first bad row of a column, so a
failing batch drops the rows it names and bisects the rest: a clean batch costs one vectorized validation,
a batch with k bad rows about k·log(n). The good rows are then predicted in one call; if the model itself
fails on them (a row that breaks a custom transformer), they are predicted one by one so the others are
still answered and only the breaking row carries the error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from modelyard.errors import ModelyardError, PredictionError, SchemaError, SchemaProblem
from modelyard.runtime.columns import Columns
from modelyard.schema import Rows

if TYPE_CHECKING:
    from modelyard.runtime.predictor import Model


@dataclass(frozen=True)
class RowError:
    """Why one input row got no prediction. ``reason`` does not name the row: callers name it their way
    (the stream by message id, batch by its position in the whole input)."""

    row: int  # position in the rows given to predict_partial
    field: str | None
    reason: str
    code: str = SchemaError.code  # or PredictionError.code: the model failed on this valid row
    problems: tuple[SchemaProblem, ...] = ()  # every schema problem of this row, when the schema named them

    def naming(self, row: int | str) -> str:
        """The reason naming the row as ``row`` (its place in a whole input, say), phrased as the schema
        phrases it: ``column 'a' row 1005: 'x' is not a number``."""
        if self.problems and isinstance(row, int):
            return "; ".join(p.at_row(row).message for p in self.problems)
        column = f"column '{self.field}': "
        if self.field is not None and self.reason.startswith(column):
            return f"column '{self.field}' row {row}: {self.reason.removeprefix(column)}"
        if self.reason.startswith("the row "):
            return f"row {row} {self.reason.removeprefix('the row ')}"
        return f"row {row}: {self.reason}"


@dataclass(frozen=True)
class RowResult:
    """One row's outcome: a prediction (and probabilities when asked for), or an error."""

    row: int
    prediction: Any = None
    probabilities: list[float] | None = None
    error: RowError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PartialResult:
    """Every row's outcome, kept as arrays (no Python object per good row on the batch hot path)."""

    n_rows: int
    positions: np.ndarray  # input positions of the predicted rows, ascending
    predictions: np.ndarray  # one per position
    probabilities: np.ndarray | None  # [len(positions), classes] when asked for
    errors: list[RowError]  # one per row without a prediction, by position

    def __len__(self) -> int:
        return self.n_rows

    def __iter__(self) -> Iterator[RowResult]:
        """Every row's ``RowResult``, in input order."""
        errors = {e.row: e for e in self.errors}
        good = {int(p): n for n, p in enumerate(self.positions)}
        predictions = self.predictions.tolist()
        probabilities = None if self.probabilities is None else self.probabilities.tolist()
        for row in range(self.n_rows):
            if row in errors:
                yield RowResult(row, error=errors[row])
            else:
                n = good[row]
                yield RowResult(row, predictions[n], None if probabilities is None else probabilities[n])


def predict_partial(model: Model, rows: Rows, *, probabilities: bool = False) -> PartialResult:
    """See ``Model.predict_partial``."""
    subset = _subsetter(rows)
    n_rows = len(subset.rows)
    errors: list[RowError] = []
    good: list[tuple[np.ndarray, Columns]] = []

    def walk(positions: np.ndarray) -> None:
        if len(positions) == 0:
            return
        try:
            good.append((positions, model.validate_columns(subset(positions))))
            return
        except SchemaError as exc:
            problems = row_problems(exc)
            if not problems or any(p.row >= len(positions) for p in problems):
                raise  # no single row's fault: the call itself is wrong
        errors.extend(RowError(int(positions[p.row]), p.field, p.reason, problems=p.problems) for p in problems)
        rest = np.delete(positions, [p.row for p in problems])
        if len(problems) > 1:  # the schema named every bad row it saw: validate the rest once more
            walk(rest)
            return
        mid = len(rest) // 2
        walk(rest[:mid])
        walk(rest[mid:])

    walk(np.arange(n_rows))
    if not good:
        empty_proba = np.empty((0, len(model.classes_ or []))) if probabilities else None
        return _result(n_rows, np.empty(0, dtype=int), np.empty(0), empty_proba, errors)
    good.sort(key=lambda part: int(part[0][0]))
    positions = np.concatenate([p for p, _ in good])
    columns = Columns.concat([c for _, c in good])
    try:
        predictions = model.predict_frame(columns)
        proba = model.predict_proba_frame(columns) if probabilities else None
    except PredictionError:  # one row broke the model: find it, answer the others
        return _one_by_one(model, n_rows, positions, columns, probabilities, errors)
    return _result(n_rows, positions, predictions, proba, errors)


def _one_by_one(model: Model, n_rows: int, positions: np.ndarray, columns: Columns, probabilities: bool,
                errors: list[RowError]) -> PartialResult:
    kept: list[int] = []
    predictions: list[Any] = []
    proba: list[np.ndarray] = []
    for n, position in enumerate(positions):
        one = columns.slice(n, n + 1)
        try:
            prediction = model.predict_frame(one)[0]
            row_proba = model.predict_proba_frame(one)[0] if probabilities else None
        except ModelyardError as exc:
            errors.append(RowError(int(position), None, exc.message, exc.code))
            continue
        kept.append(int(position))
        predictions.append(prediction)
        if row_proba is not None:
            proba.append(row_proba)
    width = len(model.classes_ or [])
    return _result(n_rows, np.asarray(kept, dtype=int), np.asarray(predictions),
                   (np.asarray(proba) if proba else np.empty((0, width))) if probabilities else None, errors)


def _result(n_rows: int, positions: np.ndarray, predictions: np.ndarray, proba: np.ndarray | None,
            errors: list[RowError]) -> PartialResult:
    return PartialResult(n_rows, positions, predictions, proba, sorted(errors, key=lambda e: e.row))


@dataclass(frozen=True)
class _Problem:
    row: int
    field: str | None
    reason: str
    problems: tuple[SchemaProblem, ...] = ()


def row_problems(exc: SchemaError) -> list[_Problem]:
    """The rows a ``SchemaError`` blames, with a reason that does not name the row.

    A ``SchemaError`` that carries structured problems (``exc.problems``: objects with ``row``, ``field``,
    ``reason``) is read as it is. Until every ``SchemaError`` does, one that only has ``row`` and ``field``
    gets its reason from the message, the row number taken out: this adapter is the one place that reads
    the message text.
    """
    structured = getattr(exc, "problems", None)
    if structured:
        if any(p.row is None for p in structured):
            return []
        by_row: dict[int, list[SchemaProblem]] = {}
        for p in structured:
            by_row.setdefault(int(p.row), []).append(p)
        return [_Problem(row, ps[0].field, "; ".join(p.describe("the row") for p in ps), tuple(ps))
                for row, ps in by_row.items()]
    if exc.row is None:
        return []
    return [_Problem(exc.row, exc.field, _without_row(exc.message, exc.row))]


def _without_row(message: str, row: int) -> str:
    """``column 'a' row 3: x`` → ``column 'a': x``; ``row 3 is missing column 'b'`` → ``the row is ...``."""
    out = re.sub(rf"^column '(.*?)' row {row}: ", r"column '\1': ", message, count=1)
    if out == message:
        out = re.sub(rf"^row {row}\b", "the row", message, count=1)
    return out


class _subsetter:
    """Rows picked by position, from a DataFrame or from a list of row objects."""

    def __init__(self, rows: Rows) -> None:
        if isinstance(rows, pd.DataFrame):
            self.rows: Any = rows.reset_index(drop=True)
        elif isinstance(rows, Mapping):
            self.rows = [rows]
        else:
            self.rows = rows if isinstance(rows, Sequence) else list(rows)

    def __call__(self, positions: np.ndarray) -> Any:
        if isinstance(self.rows, pd.DataFrame):
            return self.rows.iloc[positions]
        return [self.rows[i] for i in positions]
