"""The compiled fast path: a fitted pipeline as ONNX, run by ONNX Runtime, kept only with proven parity.

At publish time ``compile_fast_path`` converts the pipeline (``onnxconv``), runs it on the whole reference
set plus a few probe rows the reference set may lack (each nullable column missing, each categorical
column holding a category never seen), and keeps it only when it agrees with scikit-learn: regression
within an absolute tolerance; classification with identical labels and probabilities within tolerance.
XGBoost and LightGBM (through onnxmltools' float32 trees) are held
to ``FLOAT32_RTOL``/``FLOAT32_PROBABILITY_TOL`` instead. The decision, the reason and the measured maximum
difference go to the manifest's ``fast_path``
(``FastPathDecision``); anything else (a step ONNX cannot express, a mismatch, an error) is recorded and
scikit-learn serves.

At run time ``OnnxRunner`` is fed validated column arrays. A real empty string in a categorical column
cannot be told from a missing value in the graph, so such a request is answered by scikit-learn instead.
Each ONNX Runtime call is single-threaded: with more threads ONNX Runtime splits the trees of a batch
between them and adds the partial sums in another order than scikit-learn (1 ulp off); one thread per
call keeps every row's sum in scikit-learn's order. Large batches are cut into one chunk per core, run
side by side (ONNX Runtime releases the GIL), which is as fast and stays exact; a thread that keeps a call
per core in flight itself (the batch executor's) runs its calls whole (``run_alone_in_this_thread``).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd

from modelyard.bundle import ONNX_FILE
from modelyard.errors import PredictionError
from modelyard.runtime.onnxconv import MISSING_STRING, convert, float32_graph, merge_column_inputs
from modelyard.schema import InputSchema

FAST_PATH_KEY = "fast_path"
REGRESSION_RTOL = 1e-9  # x the largest |prediction|: double rounding passes, a float32 graph does not
PROBABILITY_TOL = 1e-9
# onnxmltools writes XGBoost and LightGBM trees with float32 thresholds, leaves and sums: a float32 graph
# agrees to about 1e-7 relative, so those models are held to this looser (stated, recorded) tolerance
FLOAT32_RTOL = 1e-6
FLOAT32_PROBABILITY_TOL = 1e-6
PARALLEL_MIN_ROWS = 8192
SMALL_FEED_ROWS = 16  # string columns of at most this many rows are checked value by value
UNSEEN_PROBE = "\u2400modelyard-unseen-probe"


@dataclass
class Compiled:
    """The outcome of a compile attempt: the manifest entry, and the ONNX bytes when it was kept."""

    info: dict[str, Any]
    onnx_bytes: bytes | None = None

    @property
    def extra_files(self) -> dict[str, bytes]:
        return {ONNX_FILE: self.onnx_bytes} if self.onnx_bytes is not None else {}


def compile_fast_path(
    pipeline: Any,
    schema: InputSchema,
    reference: pd.DataFrame,
    *,
    task: str,
    label_dtype: str | None = None,
    rtol: float = REGRESSION_RTOL,
    probability_tol: float = PROBABILITY_TOL,
) -> Compiled:
    """Try ONNX for ``pipeline``; keep it only if it matches scikit-learn on ``reference`` (validated)."""
    started = time.perf_counter()
    if float32_graph(pipeline):
        rtol, probability_tol = max(rtol, FLOAT32_RTOL), max(probability_tol, FLOAT32_PROBABILITY_TOL)
    try:
        onnx_bytes = convert(pipeline, schema, task=task)
    except Exception as exc:  # any step skl2onnx cannot express: scikit-learn serves
        return _disabled(f"ONNX conversion failed: {_first_line(exc)}")
    try:
        runner = OnnxRunner(onnx_bytes, schema, task=task, label_dtype=label_dtype)
        probe = probe_rows(reference, schema)
        info = check_parity(pipeline, runner, probe, task=task, reference_rows=len(reference), rtol=rtol,
                            probability_tol=probability_tol)
    except Exception as exc:
        return _disabled(f"the ONNX model did not run: {_first_line(exc)}")
    info["compile_seconds"] = round(time.perf_counter() - started, 3)
    return Compiled(info, onnx_bytes if info["enabled"] else None)


def _disabled(reason: str) -> Compiled:
    return Compiled({"enabled": False, "kind": "sklearn", "reason": reason, "max_abs_diff": None,
                     "tolerance": None})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class OnnxRunner:
    """An ONNX Runtime session fed straight from validated column arrays."""

    def __init__(
        self,
        onnx_bytes: bytes,
        schema: InputSchema,
        *,
        task: str,
        label_dtype: str | None = None,
        workers: int | None = None,
    ) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        kinds = {c.name: c.kind == "numeric" for c in schema.columns}
        merged_bytes, merged = merge_column_inputs(onnx_bytes)
        if any({kinds.get(c) for c in cols} not in ({True}, {False}) for cols in merged.values()):
            merged_bytes, merged = onnx_bytes, {}  # a group mixing numeric and string columns: as converted
        self.session_ = ort.InferenceSession(merged_bytes, options, providers=["CPUExecutionProvider"])
        self.task = task
        # each graph input and the schema columns it takes, in order: one column, or the columns a Concat
        # of the converted graph joined (``merge_column_inputs``)
        groups = [(i.name, merged.get(i.name, (i.name,))) for i in self.session_.get_inputs()]
        numeric_groups = [(name, cols) for name, cols in groups if kinds.get(cols[0], False)]
        string_groups = [(name, cols) for name, cols in groups if not kinds.get(cols[0], False)]
        nullable = {c.name: c.nullable for c in schema.columns}
        self.numeric_ = [c for _, cols in numeric_groups for c in cols]
        self.strings_ = [(c, nullable.get(c, False)) for _, cols in string_groups for c in cols]
        ends = itertools.accumulate(len(cols) for _, cols in numeric_groups)
        self.numeric_inputs_ = [(name, end - len(cols), end)
                                for (name, cols), end in zip(numeric_groups, ends, strict=True)]
        self.string_inputs_ = [(name, len(cols)) for name, cols in string_groups]
        outputs = [o.name for o in self.session_.get_outputs()]
        self.label_output_ = outputs[0]
        self.proba_output_ = outputs[1] if task == "classification" and len(outputs) > 1 else None
        self.label_dtype_ = np.dtype(label_dtype) if label_dtype else None
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    def feeds(self, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Graph inputs from validated columns; ``None`` when a value cannot be told from a missing one."""
        feeds: dict[str, np.ndarray] = {}
        if self.numeric_:
            numbers = np.column_stack([np.asarray(columns[name], dtype=np.float64) for name in self.numeric_])
            for name, start, end in self.numeric_inputs_:
                feeds[name] = numbers[:, start:end]
        cells: list[np.ndarray] = []
        for name, nullable in self.strings_:
            values = columns[name]
            if values.dtype != object:
                values = values.astype(object)
            if len(values) <= SMALL_FEED_ROWS:
                small = _small_strings(values, nullable)
                if small is None:
                    return None
                if small is not _UNDECIDED:
                    cells.append(small)
                    continue
            empty = values == MISSING_STRING
            if empty.any():
                return None
            if nullable:
                nulls = pd.isna(values)
                if nulls.any():
                    values = values.copy()
                    values[nulls] = MISSING_STRING
            cells.append(values.reshape(-1, 1))
        start = 0
        for name, width in self.string_inputs_:
            feeds[name] = cells[start] if width == 1 else np.concatenate(cells[start:start + width], axis=1)
            start += width
        return feeds

    def feeds_of_row(self, row: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        """``feeds`` of one row's values: the numeric inputs as (1, k) views of one array made in one numpy
        call, each string input one (1, k) array of cells (the column path makes a one-element array per
        column and then joins them: a few calls a column). ``None`` as ``feeds``; ``ROW_UNDECIDED`` for a
        value the column path must judge."""
        numbers = np.array((tuple(row[name] for name in self.numeric_),), dtype=np.float64)
        feeds = {name: numbers[:, start:end] for name, start, end in self.numeric_inputs_}
        strings = self.strings_
        start = 0
        for name, width in self.string_inputs_:
            array = np.empty((1, width), dtype=object)
            for i in range(width):
                column, nullable = strings[start + i]
                cell = _string_cell(row[column], nullable)
                if cell is None:
                    return None
                if cell is _UNDECIDED:
                    return ROW_UNDECIDED
                array[0, i] = cell
            feeds[name] = array
            start += width
        return feeds

    def run(self, feeds: dict[str, np.ndarray], *, proba: bool = False) -> np.ndarray:
        name = self.proba_output_ if proba else self.label_output_
        if name is None:
            raise PredictionError("the ONNX model has no probability output")
        n = len(next(iter(feeds.values()))) if feeds else 0
        if n >= PARALLEL_MIN_ROWS and self.workers > 1 and not getattr(_CALLER, "alone", False):
            cuts = np.linspace(0, n, self.workers + 1).astype(int)
            chunks = [{k: v[a:b] for k, v in feeds.items()} for a, b in itertools.pairwise(cuts)]
            parts = _pool(self.workers).map(lambda chunk: self.session_.run([name], chunk)[0], chunks)
            out = np.concatenate(list(parts))
        else:
            (out,) = self.session_.run([name], feeds)
        if proba:
            return np.asarray(out, dtype=np.float64)
        out = np.asarray(out)
        if self.task == "regression":
            return out.reshape(-1).astype(np.float64, copy=False)
        out = out.reshape(-1)
        if self.label_dtype_ is not None and out.dtype != self.label_dtype_:
            out = out.astype(self.label_dtype_)
        return out


_UNDECIDED = np.empty(0, dtype=object)
ROW_UNDECIDED: dict[str, np.ndarray] = {}  # ``feeds_of_row``: the column path decides


def _string_cell(value: Any, nullable: bool) -> Any:
    """One value of a string column as the graph takes it: the string; ``MISSING_STRING`` for a missing
    value (None or NaN) of a nullable column; ``None`` for the missing-string marker itself (a real value the
    graph cannot tell from a missing one); ``_UNDECIDED`` for anything else (the array path decides)."""
    if type(value) is str:
        return None if value == MISSING_STRING else value
    if nullable and (value is None or (type(value) is float and value != value)):
        return MISSING_STRING
    return _UNDECIDED


def _small_strings(values: np.ndarray, nullable: bool) -> np.ndarray | None:
    """``feeds`` of a string column of a few rows, value by value (``_string_cell``: the five numpy calls of
    the array path cost more than the rows): the graph input, ``None`` when a value is the missing-string
    marker, or ``_UNDECIDED`` when the array path must decide."""
    out: list[Any] = []
    for v in values.tolist():
        cell = _string_cell(v, nullable)
        if cell is None or cell is _UNDECIDED:
            return cast(np.ndarray | None, cell)
        out.append(cell)
    array = np.empty((len(out), 1), dtype=object)
    array[:, 0] = out
    return array


_CALLER = threading.local()


def run_alone_in_this_thread() -> None:
    """Each later ONNX call of this thread runs on this thread alone, however large its batch: for a caller
    that already keeps one call per core in flight (the batch executor's scoring threads)."""
    _CALLER.alone = True


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """One shared pool per size for the chunks of large batches (threads live as long as the process)."""
    if workers not in _POOLS:
        _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="onnx-chunk")
    return _POOLS[workers]


def frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): frame[c].to_numpy() for c in frame.columns}


def probe_rows(reference: pd.DataFrame, schema: InputSchema, per_case: int = 3) -> pd.DataFrame:
    """The reference set plus rows it may lack: each nullable column missing, each category unseen."""
    base = reference[schema.names].reset_index(drop=True)
    if base.empty:
        raise ValueError("the reference set is empty: nothing to verify the fast path on")
    seed = base.head(per_case)
    extra = []
    for col in schema.columns:
        if col.nullable:
            extra.append(seed.assign(**{col.name: np.nan}))
        if col.kind == "categorical" and schema.unseen_categories == "allow":
            extra.append(seed.assign(**{col.name: UNSEEN_PROBE}))
    probe = pd.concat([base, *extra], ignore_index=True) if extra else base
    return schema.validate_rows(probe)


def check_parity(
    pipeline: Any,
    runner: OnnxRunner,
    probe: pd.DataFrame,
    *,
    task: str,
    reference_rows: int,
    rtol: float = REGRESSION_RTOL,
    probability_tol: float = PROBABILITY_TOL,
) -> dict[str, Any]:
    """Compare ONNX with scikit-learn on every row of ``probe``; the manifest entry that results."""
    feeds = runner.feeds(frame_columns(probe))
    if feeds is None:
        raise ValueError("the reference set holds empty strings, which the graph reads as missing")
    info: dict[str, Any] = {"kind": "onnx", "runtime": "onnxruntime", "rows_checked": len(probe),
                            "reference_rows": reference_rows}
    if task == "regression":
        expected = np.asarray(pipeline.predict(probe), dtype=np.float64)
        diff = _max_abs_diff(expected, runner.run(feeds))
        tolerance = rtol * max(1.0, float(np.nanmax(np.abs(expected))))
        ok = diff <= tolerance
        summary = f"max |onnx - sklearn| = {diff:.3g} on {len(probe)} rows (tolerance {tolerance:.3g})"
    else:
        labels = np.asarray(pipeline.predict(probe))
        got = runner.run(feeds)
        mismatched = len(labels) if labels.shape != got.shape else int(np.sum(labels != got))
        diff = 0.0
        if runner.proba_output_ is not None and hasattr(pipeline, "predict_proba"):
            diff = _max_abs_diff(np.asarray(pipeline.predict_proba(probe), dtype=np.float64),
                                 runner.run(feeds, proba=True))
        tolerance = probability_tol
        ok = mismatched == 0 and diff <= tolerance
        info["label_mismatches"] = mismatched
        summary = (f"{mismatched} of {len(probe)} labels differ, max |probability diff| = {diff:.3g} "
                   f"(tolerance {tolerance:.3g})")
    info.update(enabled=ok, max_abs_diff=diff, tolerance=tolerance)
    if ok:
        info["detail"] = f"ONNX Runtime, {summary}"
    else:
        info.update(kind="sklearn", reason=f"parity check failed: {summary}")
    return info


def _max_abs_diff(expected: np.ndarray, got: np.ndarray) -> float:
    if got.shape != expected.shape and got.size == expected.size:
        got = got.reshape(expected.shape)
    if got.shape != expected.shape:
        return float("inf")
    same_nan = np.isnan(expected) & np.isnan(got)
    diff = np.where(same_nan, 0.0, np.abs(expected - got))
    if not diff.size:
        return 0.0
    return float("inf") if np.isnan(diff).any() else float(diff.max())
