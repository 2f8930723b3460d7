"""Fit a spec's pipeline on its data, evaluate it on a seeded held-out split, and write its bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.model_selection import train_test_split

from modelyard.bundle import DataLineage, DataWindow, Lineage, Manifest, SplitLineage, TrainingCost
from modelyard.durations import parse_duration
from modelyard.errors import BudgetExceededError, DataSourceError, SpecError
from modelyard.pipeline.assemble import assemble_bundle
from modelyard.pipeline.budget import Budget, fit_measured
from modelyard.pipeline.build import build_pipeline
from modelyard.pipeline.evaluate import DEFAULT_METRICS, check_metric_names, evaluate
from modelyard.pipeline.lineage import environment, git_state
from modelyard.pipeline.sources import LoadedData, is_windowed, read_source, window_ending
from modelyard.pipeline.spec import TrainSpec
from modelyard.schema import InputSchema

Progress = Callable[[str], None]


@dataclass
class TrainResult:
    spec: TrainSpec
    data: LoadedData
    pipeline: Any
    task: str
    metrics: dict[str, float]
    X_train: pd.DataFrame
    X_test: pd.DataFrame
    y_train: Any
    y_test: Any
    training_cost: TrainingCost | None = None
    window: DataWindow | None = None

    def lineage(self) -> Lineage:
        return Lineage(
            spec=self.spec.as_dict(),
            spec_dir=str(self.spec.base_dir) if self.spec.base_dir else None,
            data=DataLineage(
                location=self.data.location,
                description=self.data.description,
                sha256=self.data.sha256,
                rows=len(self.data.frame),
                columns=[str(c) for c in self.data.frame.columns],
                window=self.window,
            ),
            seed=self.spec.seed,
            split=SplitLineage(test_size=self.spec.split.test_size, train_rows=len(self.X_train),
                               test_rows=len(self.X_test)),
            git=git_state(self.spec.base_dir),
            environment=environment(self.spec.model.estimator),
        )

    def write_bundle(self, directory: Path) -> Manifest:
        return assemble_bundle(
            directory,
            name=self.spec.name,
            pipeline=self.pipeline,
            X_fit=self.X_train,
            X_ref=self.X_test,
            y_ref=self.y_test,
            y_fit=self.y_train,
            target=self.spec.data.target,
            metrics=self.metrics,
            lineage=self.lineage(),
            categorical=self.spec.features.categorical,
            unseen_categories=self.spec.schema_.unseen_categories,
            seed=self.spec.seed,
            training_cost=self.training_cost,
        )


def check_data(spec: TrainSpec, frame: pd.DataFrame, origin: str) -> None:
    columns = [str(c) for c in frame.columns]
    for col in [*spec.feature_names, spec.data.target]:
        if col not in columns:
            raise SpecError(f"'{col}' is not a column of {origin} (columns: {', '.join(columns)})")
    if frame[spec.data.target].isna().any():
        n = int(frame[spec.data.target].isna().sum())
        raise DataSourceError(f"target '{spec.data.target}' is missing in {n} rows of {origin}")
    if len(frame) < 10:
        raise DataSourceError(f"{origin} has {len(frame)} rows: too few to split and evaluate")


def resolve_window(spec: TrainSpec, window: DataWindow | str | timedelta | None = None, *,
                   now: datetime | None = None) -> DataWindow | None:
    """The window a windowed query reads: as given (a ``DataWindow``, or a length ending ``now``), else the
    spec's ``[data] window`` ending now; None for a query without placeholders and no window asked for."""
    if isinstance(window, DataWindow):
        return window
    length = window if window is not None else spec.data.window
    if length is None or (window is None and not is_windowed(spec.data.query)):
        return None
    bound = window_ending(now or datetime.now(UTC), parse_duration(length, what="--window"))
    return bound.model_copy(update={"length": length}) if isinstance(length, str) else bound


def load_training_data(spec: TrainSpec, window: DataWindow | None = None) -> LoadedData:
    data = read_source(spec.data.source, query=spec.data.query, base_dir=spec.base_dir, window=window)
    check_data(spec, data.frame, data.location)
    return data


def prepare(spec: TrainSpec, data: LoadedData) -> tuple[pd.DataFrame, Any]:
    """The features as the model will see them at serving time (same validation, same dtypes)."""
    X = data.frame[spec.feature_names]
    schema = InputSchema.infer(X, categorical=spec.features.categorical)
    return schema.validate_rows(X), data.frame[spec.data.target].to_numpy()


def train(spec: TrainSpec, *, progress: Progress | None = None, data: LoadedData | None = None,
          window: DataWindow | str | timedelta | None = None, now: datetime | None = None) -> TrainResult:
    """Fit and evaluate ``spec``; ``window`` (or the spec's ``[data] window``) binds a windowed query.

    A length of window ends ``now`` (default: the current time). A fit over the spec's ``[budget]`` raises
    ``BudgetExceededError``."""
    say = progress or (lambda _msg: None)
    say("reading data")
    bound = resolve_window(spec, window, now=now)
    data = data or load_training_data(spec, bound)
    X, y = prepare(spec, data)
    pipeline = build_pipeline(spec)
    task = "classification" if is_classifier(pipeline) else "regression"
    metric_names = spec.metrics or DEFAULT_METRICS[task]
    if task == "classification" and len(np.unique(y)) > 2 and "roc_auc" in metric_names and not spec.metrics:
        metric_names = [m for m in metric_names if m != "roc_auc"]
    check_metric_names(metric_names, task)
    stratify = y if (spec.split.stratify and task == "classification") else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=spec.split.test_size, random_state=spec.seed, stratify=stratify
    )
    say(f"fitting {spec.model.estimator} on {len(X_train)} rows")
    budget = Budget(spec.budget.max_seconds, spec.budget.max_memory_mb)
    try:
        pipeline, cost = fit_measured(pipeline, X_train, y_train, budget, name=spec.name)
    except (BudgetExceededError, SpecError):
        raise
    except Exception as exc:
        raise SpecError(f"fitting {spec.model.estimator} failed: {exc}".splitlines()[0]) from exc
    say(f"evaluating on {len(X_test)} held-out rows")
    metrics = evaluate(pipeline, X_test, y_test, task, metric_names)
    return TrainResult(spec, data, pipeline, task, metrics, X_train, X_test, y_train, y_test, cost, bound)
