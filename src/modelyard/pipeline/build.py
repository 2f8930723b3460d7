"""Turn a spec into ONE scikit-learn Pipeline: impute, scale, one-hot, select, estimate."""

from __future__ import annotations

import inspect
from typing import Any

from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.feature_selection import (
    SelectFromModel,
    SelectKBest,
    VarianceThreshold,
    f_classif,
    f_regression,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LassoCV, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from modelyard.errors import SpecError
from modelyard.pipeline.spec import TrainSpec, resolve_estimator

_SCALERS = {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}


def make_estimator(spec: TrainSpec) -> Any:
    cls = resolve_estimator(spec.model.estimator)
    params = dict(spec.model.params)
    accepted = inspect.signature(cls).parameters
    unknown = [p for p in params if p not in accepted and "kwargs" not in accepted]
    if unknown:
        raise SpecError(f"model.params: {cls.__name__} takes no parameter {unknown[0]!r}")
    if "random_state" in accepted and "random_state" not in params:
        params["random_state"] = spec.seed
    try:
        return cls(**params)
    except Exception as exc:
        raise SpecError(f"model.params: {cls.__name__}({params}) failed: {exc}") from exc


def build_pipeline(spec: TrainSpec) -> Pipeline:
    pre = spec.preprocessing
    transformers = []
    if spec.features.numeric:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy=pre.numeric_imputer))]
        if pre.scaler != "none":
            steps.append(("scale", _SCALERS[pre.scaler]()))
        transformers.append(("num", Pipeline(steps), spec.features.numeric))
    if spec.features.categorical:
        imputer = SimpleImputer(strategy=pre.categorical_imputer, fill_value="__missing__")
        if pre.one_hot_min_frequency is not None or pre.max_categories is not None:
            encoder = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                min_frequency=pre.one_hot_min_frequency,
                max_categories=pre.max_categories,
                sparse_output=False,
            )
        else:
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("cat", Pipeline([("impute", imputer), ("onehot", encoder)]),
                             spec.features.categorical))
    estimator = make_estimator(spec)
    steps = [("preprocess", ColumnTransformer(transformers, remainder="drop"))]
    selector = _selector(spec, classifier=is_classifier(estimator))
    if selector is not None:
        steps.append(("select", selector))
    steps.append(("model", estimator))
    return Pipeline(steps)


def _selector(spec: TrainSpec, *, classifier: bool) -> Any | None:
    sel = spec.selection
    if sel.method == "none":
        return None
    if sel.method == "k_best":
        if not sel.k:
            raise SpecError("selection.k: set how many features k_best keeps")
        return SelectKBest(f_classif if classifier else f_regression, k=sel.k)
    if sel.method == "variance":
        return VarianceThreshold(threshold=sel.threshold or 0.0)
    base = (
        LogisticRegression(penalty="l1", solver="liblinear", random_state=spec.seed)
        if classifier
        else LassoCV(random_state=spec.seed)
    )
    return SelectFromModel(base, threshold=sel.threshold, max_features=sel.k)
