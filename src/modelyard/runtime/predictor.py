"""A loaded model version: validate rows against its schema, then predict.

The model knows nothing of HTTP, brokers or databases; servers, batch jobs, stream consumers and users'
own Python code (pattern 4) all call this same object.

When the bundle holds a verified ONNX copy (``manifest.fast_path.serves_onnx``), predictions come from
ONNX Runtime, fed straight from column arrays; otherwise, or for a request the graph cannot take (a real
empty-string category), from the scikit-learn pipeline. Both answer alike: the bundle was only published
with its ONNX copy after the two agreed on every reference row.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import numpy as np
import pandas as pd

from modelyard.bundle import ONNX_FILE, Bundle, Manifest, load_bundle, sha256_bytes
from modelyard.errors import BundleError, IntegrityError, ModelyardError, PredictionError
from modelyard.runtime.columns import Columns, frame_as_is, validate_columns
from modelyard.runtime.fastpath import ROW_UNDECIDED, OnnxRunner
from modelyard.schema import InputSchema, OutputSchema, Rows

if TYPE_CHECKING:
    from modelyard.runtime.partial import PartialResult

log = logging.getLogger(__name__)
WARM_UP_ROWS = 2
Validated: TypeAlias = pd.DataFrame | Columns


class Model:
    """One immutable model version, ready to predict.

    ``Model.load(bundle)`` does the work (verifies checksums, unpickles, starts the ONNX fast path);
    the constructor only stores what was loaded, and loaded state ends in ``_`` (scikit-learn's habit).
    ``Model(bundle)`` on its own is a model answered by scikit-learn alone.
    """

    def __init__(self, bundle: Bundle, *, onnx_bytes: bytes | None = None, runner: OnnxRunner | None = None,
                 fast_path_error: str | None = None, onnx_workers: int | None = None) -> None:
        self.bundle_ = bundle
        self.onnx_bytes_ = onnx_bytes
        self.runner_ = runner
        self.fast_path_error_ = fast_path_error
        self.onnx_workers = onnx_workers
        self.fast_path_fallbacks_ = 0

    @classmethod
    def load(cls, source: Bundle | Path, *, fast_path: bool = True, onnx_workers: int | None = None) -> Self:
        """A ready model from a bundle folder (checksums verified, pipeline unpickled) or a loaded ``Bundle``,
        with its verified ONNX copy running when the manifest says it passed its parity check."""
        bundle = source if isinstance(source, Bundle) else load_bundle(Path(source))
        onnx_bytes = read_onnx(bundle) if fast_path else None
        runner, error = start_runner(bundle, onnx_bytes, onnx_workers)
        return cls(bundle, onnx_bytes=onnx_bytes, runner=runner, fast_path_error=error,
                   onnx_workers=onnx_workers)

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (for Dask workers, say) carry the ONNX bytes; the session is rebuilt on arrival."""
        return {**self.__dict__, "runner_": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.runner_, self.fast_path_error_ = start_runner(self.bundle_, self.onnx_bytes_, self.onnx_workers)

    @property
    def manifest(self) -> Manifest:
        return self.bundle_.manifest

    @cached_property
    def schema(self) -> InputSchema:
        return self.bundle_.input_schema

    @cached_property
    def output_schema(self) -> OutputSchema:
        return self.bundle_.output_schema

    @property
    def pipeline_(self) -> Any:
        return self.bundle_.pipeline_

    @property
    def name(self) -> str:
        return self.bundle_.name

    @property
    def version(self) -> int | None:
        return self.bundle_.version

    @property
    def task(self) -> str:
        return self.output_schema.task

    @property
    def classes_(self) -> list[Any] | None:
        return self.output_schema.classes

    @property
    def has_proba(self) -> bool:
        """Whether ``predict_proba`` answers: a classifier whose pipeline has it."""
        return self.task == "classification" and hasattr(self.pipeline_, "predict_proba")

    @property
    def fast_path(self) -> str:
        """``"onnx"`` when ONNX Runtime answers, ``"sklearn"`` otherwise."""
        return "onnx" if self.runner_ is not None else "sklearn"

    def __repr__(self) -> str:
        return f"<Model {self.name} v{self.version} ({self.task}, {self.fast_path})>"

    # ---- validation -----------------------------------------------------------------------------------
    def validate(self, rows: Rows) -> pd.DataFrame:
        """Rows checked against the schema, as the frame the scikit-learn pipeline takes."""
        return validate_columns(self.schema, rows).to_frame()

    def validate_columns(self, rows: Rows) -> Columns:
        """Rows checked against the schema, as one array per column (no DataFrame when avoidable)."""
        return validate_columns(self.schema, rows)

    def warm_up(self) -> None:
        """Predict a few of the bundle's own reference rows: the first request is then as fast as the rest,
        and a version that cannot even predict its reference set raises ``BundleError`` (it is refused
        before it serves anyone). A bundle without a reference set (an imported model) has nothing to do."""
        try:
            rows = self.bundle_.reference_inputs().head(WARM_UP_ROWS)
        except Exception:
            return
        if rows.empty:
            return
        try:
            self.predict_frame(self.validate(rows))
        except ModelyardError as exc:
            raise BundleError(f"{self.name} v{self.version} cannot predict its own reference rows: "
                              f"{exc.message}", model=self.name, version=self.version) from exc

    # ---- prediction -----------------------------------------------------------------------------------
    def predict_partial(self, rows: Rows, *, probabilities: bool = False) -> PartialResult:
        """One prediction or one error per row: bad rows never fail the call (see ``runtime/partial.py``).

        Only a problem that is no single row's fault (a DataFrame without a schema column) raises
        ``SchemaError``."""
        from modelyard.runtime.partial import predict_partial

        return predict_partial(self, rows, probabilities=probabilities)

    def predict(self, rows: Rows) -> np.ndarray:
        """Predictions for ``rows``: a DataFrame, a list of dicts or one dict."""
        return self.predict_frame(self._validated(rows))

    def predict_proba(self, rows: Rows) -> np.ndarray:
        return self.predict_proba_frame(self._validated(rows))

    def _validated(self, rows: Rows) -> Validated:
        """Columns for ONNX; for scikit-learn, the caller's own frame when its dtypes already pass."""
        if self.runner_ is not None:
            return validate_columns(self.schema, rows)
        if isinstance(rows, pd.DataFrame):
            as_is = frame_as_is(self.schema, rows)
            if as_is is not None:
                return as_is
        return self.validate(rows)

    def predict_frame(self, frame: Validated) -> np.ndarray:
        """Predict rows already validated (a frame from ``validate`` or ``Columns``): what servers call."""
        return self._run(frame, proba=False)

    def predict_proba_frame(self, frame: Validated) -> np.ndarray:
        if not self.has_proba:
            raise PredictionError(f"{self.name} v{self.version} is a {self.task} model: no probabilities",
                                  model=self.name, version=self.version)
        return self._run(frame, proba=True)

    def _run(self, rows: Validated, *, proba: bool) -> np.ndarray:
        try:
            if self.runner_ is not None:
                out = self._run_onnx(rows, proba=proba)
                if out is not None:
                    return out
            frame = rows.to_frame() if isinstance(rows, Columns) else rows
            method = self.pipeline_.predict_proba if proba else self.pipeline_.predict
            return np.asarray(method(frame))
        except ModelyardError:
            raise
        except Exception as exc:
            raise PredictionError(f"{self.name} v{self.version} failed to predict: {exc}",
                                  model=self.name, version=self.version) from exc

    def _run_onnx(self, rows: Validated, *, proba: bool) -> np.ndarray | None:
        assert self.runner_ is not None
        row = rows.row if isinstance(rows, Columns) else None
        feeds = self.runner_.feeds_of_row(row) if row is not None else ROW_UNDECIDED
        if feeds is ROW_UNDECIDED:
            feeds = self.runner_.feeds(rows.data if isinstance(rows, Columns) else _frame_columns(rows))
        if feeds is None:
            self.fast_path_fallbacks_ += 1
            return None
        try:
            return self.runner_.run(feeds, proba=proba)
        except Exception as exc:  # scikit-learn still answers; the count shows it happened
            self.fast_path_fallbacks_ += 1
            log.warning("%s v%s: ONNX Runtime failed (%s), scikit-learn answers", self.name, self.version,
                        exc)
            return None


def read_onnx(bundle: Bundle) -> bytes | None:
    """The verified ONNX copy when the manifest says the fast path passed its parity check."""
    if not bundle.manifest.serves_onnx:
        return None
    path = bundle.path / ONNX_FILE
    expected = bundle.manifest.files.get(ONNX_FILE)
    data = path.read_bytes() if path.exists() else None
    if data is None or expected is None or sha256_bytes(data) != expected:
        raise IntegrityError(
            f"bundle file {ONNX_FILE} in {bundle.path} is missing or does not match the manifest's "
            "checksum: refusing to load it", file=ONNX_FILE)
    return data


def start_runner(bundle: Bundle, onnx_bytes: bytes | None,
                 workers: int | None) -> tuple[OnnxRunner | None, str | None]:
    """An ONNX Runtime session over ``onnx_bytes`` (or none), and why not when it could not start."""
    if onnx_bytes is None:
        return None, None
    output = bundle.output_schema
    label_dtype = output.dtype if output.task == "classification" else None
    try:
        return OnnxRunner(onnx_bytes, bundle.input_schema, task=output.task, label_dtype=label_dtype,
                          workers=workers), None
    except Exception as exc:  # a verified file this onnxruntime cannot run: version skew
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("%s v%s: ONNX fast path unavailable, scikit-learn serves (%s)", bundle.name,
                    bundle.version, error)
        return None, error


def _frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): frame[c].to_numpy() for c in frame.columns}
