"""Assemble a bundle from a fitted pipeline and the data it was fitted on.

Shared by ``modelyard train`` and ``modelyard.publish`` (bring your own pipeline), so a model fitted
outside modelyard gets the same schema, reference data, statistics and lineage as one trained here.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier

from modelyard._version import __version__
from modelyard.bundle import (
    PREDICTION_COLUMN,
    TARGET_COLUMN,
    Bundle,
    FastPathDecision,
    Lineage,
    Manifest,
    ReferenceProfile,
    TrainingCost,
    profile_frame,
    profile_series,
    write_bundle,
    write_manifest,
)
from modelyard.errors import ExplainerUnavailableError, ModelyardError
from modelyard.runtime import Model
from modelyard.runtime.fastpath import compile_fast_path
from modelyard.schema import InputSchema, OutputSchema

log = logging.getLogger(__name__)
MAX_REFERENCE_ROWS = 10_000


def task_of(pipeline: Any) -> str:
    return "classification" if is_classifier(pipeline) else "regression"


def assemble_bundle(
    directory: Path,
    *,
    name: str,
    pipeline: Any,
    X_fit: pd.DataFrame,
    X_ref: pd.DataFrame,
    y_ref: Any | None = None,
    y_fit: Any | None = None,
    target: str | None = None,
    metrics: dict[str, float] | None = None,
    lineage: Lineage | None = None,
    categorical: list[str] | None = None,
    unseen_categories: str = "allow",
    seed: int = 0,
    fast_path: bool = True,
    training_cost: TrainingCost | None = None,
    importance: bool = True,
    model_bytes: bytes | None = None,
) -> Manifest:
    """Write the bundle of a fitted pipeline; with ``fast_path``, also its ONNX copy when it has parity; with
    ``importance``, the version's global importance per input column (``global_importance``).
    ``model_bytes``: the pipeline already dumped (``write_bundle``)."""
    schema = InputSchema.infer(X_fit, categorical=categorical, unseen_categories=unseen_categories)  # type: ignore[arg-type]
    task = task_of(pipeline)
    if len(X_ref) > MAX_REFERENCE_ROWS:
        keep = np.sort(np.random.default_rng(seed).choice(len(X_ref), MAX_REFERENCE_ROWS, replace=False))
        X_ref = X_ref.iloc[keep]
        y_ref = None if y_ref is None else np.asarray(y_ref)[keep]
    X_ref = schema.validate_rows(X_ref)
    predictions = pipeline.predict(X_ref)
    reference = X_ref.copy()
    if y_ref is not None:
        reference[TARGET_COLUMN] = np.asarray(y_ref)
    reference[PREDICTION_COLUMN] = predictions

    output = OutputSchema(task=task, target=target)  # type: ignore[arg-type]
    if task == "classification":
        output.classes = [_plain(c) for c in pipeline.classes_]
        output.dtype = str(np.asarray(pipeline.classes_).dtype)
    else:
        observed = np.asarray(y_fit if y_fit is not None else predictions, dtype="float64")
        output.min, output.max = float(np.nanmin(observed)), float(np.nanmax(observed))

    stats_inputs = profile_frame(X_fit, {c.name for c in schema.columns if c.kind == "categorical"})
    stats_pred = profile_series(pd.Series(predictions), categorical=task == "classification")
    compiled = (compile_fast_path(pipeline, schema, X_ref, task=task, label_dtype=output.dtype)
                if fast_path else None)
    manifest = Manifest(
        name=name,
        created=datetime.now(UTC).isoformat(),
        modelyard_version=__version__,
        task=task,  # type: ignore[arg-type]
        estimator=f"{type(_final_step(pipeline)).__module__}.{type(_final_step(pipeline)).__name__}",
        input_schema=schema,
        output_schema=output,
        metrics=metrics or {},
        lineage=lineage or Lineage(),
        reference=ReferenceProfile(rows=len(reference), fit_rows=len(X_fit), inputs=stats_inputs,
                                   prediction=stats_pred),
        fast_path=FastPathDecision.model_validate(compiled.info) if compiled else FastPathDecision(
            enabled=False, kind="sklearn", reason="not compiled (fast_path=False)", tried=False),
        training_cost=training_cost,
    )
    manifest = write_bundle(directory, pipeline=pipeline, manifest=manifest, reference=reference,
                            extra_files=compiled.extra_files if compiled else None, model_bytes=model_bytes)
    if not importance:
        return manifest
    values = _importance(directory, manifest, pipeline)
    return write_manifest(directory, manifest.model_copy(update={"global_importance": values}))


def _importance(directory: Path, manifest: Manifest, pipeline: Any) -> dict[str, float] | None:
    """``global_importance`` (mean |attribution| per input column on reference rows), None without shap."""
    from modelyard.explain import global_importance  # shap is imported only when a bundle is written

    started = time.perf_counter()
    model = Model(Bundle(path=directory, manifest=manifest, pipeline_=pipeline))  # scikit-learn answers
    try:
        values: dict[str, float] | None = global_importance(model)
    except ExplainerUnavailableError as exc:
        log.warning("%s: published without global importance: %s", manifest.name, exc.message)
        values = None
    except ModelyardError as exc:
        log.warning("%s: global importance could not be computed: %s", manifest.name, exc.message)
        values = None
    log.info("%s: global importance in %.2fs", manifest.name, time.perf_counter() - started)
    return values


def _final_step(pipeline: Any) -> Any:
    steps = getattr(pipeline, "steps", None)
    return steps[-1][1] if steps else pipeline


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
