"""A loaded model version: validate rows against its schema, then predict.

The model knows nothing of HTTP, brokers or databases; servers, batch jobs, stream consumers and users'
own Python code (pattern 4) all call this same object.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from modelyard.bundle import Bundle
from modelyard.errors import ModelyardError, PredictionError
from modelyard.schema import InputSchema, OutputSchema, Rows


class Model:
    """One immutable model version, ready to predict."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle_ = bundle
        self.manifest: dict[str, Any] = bundle.manifest
        self.schema: InputSchema = bundle.input_schema
        self.output_schema: OutputSchema = bundle.output_schema
        self.pipeline_ = bundle.pipeline_

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> int | None:
        v = self.manifest.get("version")
        return None if v is None else int(v)

    @property
    def task(self) -> str:
        return self.output_schema.task

    @property
    def classes_(self) -> list[Any] | None:
        return self.output_schema.classes

    def __repr__(self) -> str:
        return f"<Model {self.name} v{self.version} ({self.task})>"

    def validate(self, rows: Rows) -> pd.DataFrame:
        return self.schema.validate_rows(rows)

    def predict(self, rows: Rows) -> np.ndarray:
        """Predictions for ``rows``: a DataFrame, a list of dicts or one dict."""
        return self.predict_frame(self.validate(rows))

    def predict_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Predict an already validated frame (what servers call after their own validation)."""
        try:
            return np.asarray(self.pipeline_.predict(frame))
        except ModelyardError:
            raise
        except Exception as exc:
            raise PredictionError(f"{self.name} v{self.version} failed to predict: {exc}",
                                  model=self.name, version=self.version) from exc

    def predict_proba(self, rows: Rows) -> np.ndarray:
        return self.predict_proba_frame(self.validate(rows))

    def predict_proba_frame(self, frame: pd.DataFrame) -> np.ndarray:
        if self.task != "classification" or not hasattr(self.pipeline_, "predict_proba"):
            raise PredictionError(f"{self.name} v{self.version} is a {self.task} model: no probabilities",
                                  model=self.name, version=self.version)
        try:
            return np.asarray(self.pipeline_.predict_proba(frame))
        except Exception as exc:
            raise PredictionError(f"{self.name} v{self.version} failed to predict: {exc}",
                                  model=self.name, version=self.version) from exc
