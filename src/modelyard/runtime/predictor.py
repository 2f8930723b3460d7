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
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from modelyard.bundle import ONNX_FILE, Bundle, Manifest, sha256_bytes
from modelyard.errors import IntegrityError, ModelyardError, PredictionError
from modelyard.runtime.columns import Columns, validate_columns
from modelyard.runtime.fastpath import OnnxRunner
from modelyard.schema import InputSchema, OutputSchema, Rows

log = logging.getLogger(__name__)
Validated: TypeAlias = pd.DataFrame | Columns


class Model:
    """One immutable model version, ready to predict."""

    def __init__(self, bundle: Bundle, *, fast_path: bool = True, onnx_workers: int | None = None) -> None:
        self.bundle_ = bundle
        self.manifest: Manifest = bundle.manifest
        self.schema: InputSchema = bundle.input_schema
        self.output_schema: OutputSchema = bundle.output_schema
        self.pipeline_ = bundle.pipeline_
        self.fast_path_error_: str | None = None
        self.fast_path_fallbacks_ = 0
        self.onnx_workers = onnx_workers
        self.onnx_bytes_ = self._read_onnx() if fast_path else None
        self.runner_: OnnxRunner | None = self._start_runner()

    def _read_onnx(self) -> bytes | None:
        """The verified ONNX copy when the manifest says the fast path passed its parity check."""
        if not self.manifest.serves_onnx:
            return None
        path = self.bundle_.path / ONNX_FILE
        expected = self.manifest.files.get(ONNX_FILE)
        data = path.read_bytes() if path.exists() else None
        if data is None or expected is None or sha256_bytes(data) != expected:
            raise IntegrityError(
                f"bundle file {ONNX_FILE} in {self.bundle_.path} is missing or does not match the manifest's "
                "checksum: refusing to load it", file=ONNX_FILE)
        return data

    def _start_runner(self) -> OnnxRunner | None:
        if self.onnx_bytes_ is None:
            return None
        try:
            return OnnxRunner(self.onnx_bytes_, self.schema, task=self.task, label_dtype=self._label_dtype(),
                              workers=self.onnx_workers)
        except Exception as exc:  # a verified file this onnxruntime cannot run: version skew
            self.fast_path_error_ = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("%s v%s: ONNX fast path unavailable, scikit-learn serves (%s)", self.name,
                        self.version, self.fast_path_error_)
            return None

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (for Dask workers, say) carry the ONNX bytes; the session is rebuilt on arrival."""
        return {**self.__dict__, "runner_": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.runner_ = self._start_runner()

    def _label_dtype(self) -> str | None:
        return self.output_schema.dtype if self.task == "classification" else None

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int | None:
        return self.manifest.version

    @property
    def task(self) -> str:
        return self.output_schema.task

    @property
    def classes_(self) -> list[Any] | None:
        return self.output_schema.classes

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

    # ---- prediction -----------------------------------------------------------------------------------
    def predict(self, rows: Rows) -> np.ndarray:
        """Predictions for ``rows``: a DataFrame, a list of dicts or one dict."""
        if self.runner_ is None:
            return self.predict_frame(self.validate(rows))
        return self.predict_frame(validate_columns(self.schema, rows))

    def predict_proba(self, rows: Rows) -> np.ndarray:
        if self.runner_ is None:
            return self.predict_proba_frame(self.validate(rows))
        return self.predict_proba_frame(validate_columns(self.schema, rows))

    def predict_frame(self, frame: Validated) -> np.ndarray:
        """Predict rows already validated (a frame from ``validate`` or ``Columns``): what servers call."""
        return self._run(frame, proba=False)

    def predict_proba_frame(self, frame: Validated) -> np.ndarray:
        if self.task != "classification" or not hasattr(self.pipeline_, "predict_proba"):
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
        columns = rows.data if isinstance(rows, Columns) else _frame_columns(rows)
        feeds = self.runner_.feeds(columns)
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


def _frame_columns(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {str(c): frame[c].to_numpy() for c in frame.columns}
