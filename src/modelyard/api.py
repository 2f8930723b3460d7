"""The in-process API (pattern 4): load a published model, or publish a pipeline fitted elsewhere."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from modelyard.bundle import DataLineage, Lineage
from modelyard.config import Settings
from modelyard.pipeline.assemble import assemble_bundle
from modelyard.pipeline.lineage import environment
from modelyard.pipeline.sources import frame_sha256
from modelyard.registry import Registry
from modelyard.runtime import Model


def load(ref: str, *, settings: Settings | None = None) -> Model:
    """``"name"`` (production), ``"name@alias"`` or ``"name@3"`` → a verified, ready model."""
    registry = Registry(settings)
    return Model.load(registry.load(ref))


def publish(
    name: str,
    pipeline: Any,
    X: pd.DataFrame,
    y: Any | None = None,
    *,
    metrics: dict[str, float] | None = None,
    alias: str | None = None,
    categorical: list[str] | None = None,
    settings: Settings | None = None,
    source: str = "modelyard.publish",
) -> int:
    """Publish a pipeline fitted outside modelyard; ``X`` (and ``y``) give its schema and reference data."""
    if not isinstance(X, pd.DataFrame):
        raise TypeError("X must be a pandas DataFrame with named columns: they become the model's schema")
    if not hasattr(pipeline, "predict"):
        raise TypeError(f"{type(pipeline).__name__} has no predict(): not a fitted estimator")
    lineage = Lineage(
        source=source,
        data=DataLineage(sha256=frame_sha256(X), rows=len(X), columns=[str(c) for c in X.columns]),
        environment=environment(f"{type(pipeline).__module__}"),
    )
    registry = Registry(settings)
    with tempfile.TemporaryDirectory(prefix="modelyard-bundle-") as tmp:
        assemble_bundle(
            Path(tmp) / "bundle",
            name=name,
            pipeline=pipeline,
            X_fit=X,
            X_ref=X,
            y_ref=y,
            y_fit=y,
            metrics=metrics,
            lineage=lineage,
            categorical=categorical,
        )
        return registry.publish(Path(tmp) / "bundle", name=name, alias=alias, reason=f"published via {source}")
