"""Explanations add up to the prediction, sum expanded columns back to the input column, fall back to a
model-agnostic explainer (and say so), use the version that answered a past request, and feed the
importance gate of ``check``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shap
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import modelyard
from modelyard.checks import run_gates
from modelyard.config import Settings
from modelyard.errors import ExplainerUnavailableError, LineageMismatchError
from modelyard.explain import diff, explain_rows, explainer_for, load_shap
from modelyard.predlog import PredictionRecord
from modelyard.predlog.past import explain_logged
from modelyard.registry import Registry
from tests.conftest import train_and_publish


def _assert_additive(row: object) -> None:
    for out in row.outputs:  # type: ignore[attr-defined]
        total = out.base_value + sum(out.attributions.values())
        assert abs(total - out.value) <= out.tolerance, (out.label, total, out.value)
        assert out.additive and out.max_abs_error <= out.tolerance


def test_tree_attributions_of_the_house_price_regressor_add_up_and_sum_one_hot_columns(
    sqlite_settings: Settings, house_spec: Path, houses_frame: pd.DataFrame
) -> None:
    train_and_publish(house_spec, sqlite_settings)
    model = modelyard.load("house-prices", settings=sqlite_settings)
    rows = houses_frame.drop(columns=["price"]).head(20)
    explained = explain_rows(model, rows)
    assert [e.explainer for e in explained] == ["tree"] * 20 and explained[0].space == "raw"
    predictions = model.pipeline_.predict(model.validate(rows))
    for e, p in zip(explained, predictions, strict=True):
        _assert_additive(e)
        assert e.primary.value == pytest.approx(p, rel=1e-9)
        assert set(e.primary.attributions) == set(model.schema.names)  # one per input column the caller sent

    # The one-hot indicators of `neighborhood`, explained by shap on the transformed matrix, sum to its column.
    pre, est = model.pipeline_[:-1], model.pipeline_[-1]
    names = list(pre[0].get_feature_names_out())
    raw = shap.TreeExplainer(est).shap_values(pre.transform(model.validate(rows)))
    indicators = [i for i, n in enumerate(names) if n.startswith("cat__neighborhood_")]
    assert len(indicators) > 3
    for i, e in enumerate(explained):
        assert e.primary.attributions["neighborhood"] == pytest.approx(raw[i, indicators].sum(), abs=1e-6)
        assert e.primary.attributions["area_sqm"] == pytest.approx(raw[i, names.index("num__area_sqm")])

    manifest = Registry(sqlite_settings).resolve("house-prices@production").manifest
    importance = manifest.global_importance
    assert set(importance) == set(model.schema.names) and max(importance, key=importance.get) == "area_sqm"


def test_the_breast_cancer_classifier_explains_every_class_predicted_first(
    sqlite_settings: Settings, cancer_spec: Path
) -> None:
    train_and_publish(cancer_spec, sqlite_settings)
    model = modelyard.load("breast-cancer", settings=sqlite_settings)
    rows = model.bundle_.reference_inputs().head(3)
    explained = explain_rows(model, rows)
    proba = model.predict_proba(rows)
    for e, p in zip(explained, proba, strict=True):
        # LogisticRegression behind SelectKBest: no tree, so shap's model-agnostic Kernel SHAP, in probabilities
        assert e.explainer == "kernel" and "KernelExplainer" in e.explainer_detail and e.space == "probability"
        _assert_additive(e)
        assert e.outputs[0].label == e.prediction
        assert sorted(o.label for o in e.outputs) == sorted(model.classes_)
        by_label = {o.label: o.value for o in e.outputs}
        assert [by_label[c] for c in model.classes_] == pytest.approx(list(p), abs=1e-9)


def test_a_tree_classifier_is_explained_in_log_odds(sqlite_settings: Settings) -> None:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400),
                      "c": rng.choice(["x", "y", "z"], size=400)})
    y = np.where(X["a"] + (X["c"] == "x") > 0.5, "yes", "no")
    pipe = make_pipeline(make_column_transformer((StandardScaler(), ["a", "b"]), (OneHotEncoder(), ["c"])),
                         HistGradientBoostingClassifier(max_iter=20))
    modelyard.publish("clf", pipe.fit(X, y), X, pd.Series(y, name="t"), alias="production",
                      settings=sqlite_settings)
    model = modelyard.load("clf", settings=sqlite_settings)
    (e,) = explain_rows(model, X.head(1))
    assert e.explainer == "tree" and e.space == "log_odds"
    _assert_additive(e)
    p = e.probabilities[str(e.prediction)]  # type: ignore[index]
    assert e.primary.value == pytest.approx(np.log(p / (1 - p)), abs=1e-6)
    assert e.outputs[1].value == pytest.approx(-e.primary.value)


def test_a_model_without_a_tree_explainer_falls_back_and_says_which(sqlite_settings: Settings) -> None:
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300),
                      "c": rng.choice(["x", "y"], size=300)})
    y = 3 * X["a"] - X["b"] + (X["c"] == "x")
    pipe = make_pipeline(make_column_transformer((StandardScaler(), ["a", "b"]), (OneHotEncoder(), ["c"])),
                         KNeighborsRegressor())
    modelyard.publish("knn", pipe.fit(X, y), X, y, alias="production", settings=sqlite_settings)
    model = modelyard.load("knn", settings=sqlite_settings)
    explainer = explainer_for(model)
    assert explainer.kind == "exact" and "KNeighborsRegressor" in explainer.detail
    assert "Exact" in explainer.detail and "background 100 reference rows" in explainer.detail
    (e,) = explain_rows(model, X.head(1))
    assert e.explainer == "exact" and e.to_json()["explainer"] == "exact"
    _assert_additive(e)
    assert e.primary.value == pytest.approx(float(model.predict(X.head(1))[0]))


def _forest(frame: pd.DataFrame, y: pd.Series) -> object:
    return RandomForestRegressor(n_estimators=15, max_depth=6, random_state=0).fit(frame, y)


def test_a_past_request_is_explained_by_the_version_that_answered_it(sqlite_settings: Settings) -> None:
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    for k in (1.0, 5.0, -3.0):  # v1, then two newer versions with other answers
        y = k * X["a"] + X["b"]
        modelyard.publish("rf", _forest(X, y), X, y, alias="production", settings=sqlite_settings)
    registry = Registry(sqlite_settings)
    v1 = modelyard.load("rf@1", settings=sqlite_settings)
    rows = X.head(2).to_dict("records")
    record = PredictionRecord(request_id="old", model="rf", version=1, inputs=rows,
                              outputs=v1.predict(rows).tolist(), n_rows=2)
    past = explain_logged(registry, record, row=1)
    assert past.replay.matches and past.explanation.version == 1 and past.explanation.row == 1
    assert past.explanation.prediction == pytest.approx(record.outputs[1])
    latest = modelyard.load("rf", settings=sqlite_settings)
    assert latest.version == 3 and float(latest.predict(rows[1:])[0]) != pytest.approx(record.outputs[1])

    against = explain_logged(registry, record, row=1, against=latest)
    d = against.difference
    assert d is not None and d.after.version == 3 and d.changed[0] == "a"  # `a` changed the answer
    change = d.to_json()
    assert change["value_change"] == pytest.approx(change["base_value_change"] + sum(
        c["change"] for c in change["columns"]), abs=1e-6)
    assert diff(past.explanation, past.explanation).changed == []

    record.outputs = [record.outputs[0], record.outputs[1] + 1.0]  # the log says something v1 does not
    with pytest.raises(LineageMismatchError, match="MISMATCH"):
        explain_logged(registry, record, row=1)


def test_the_importance_gate_flags_a_removed_feature_and_passes_an_unchanged_one(
    sqlite_settings: Settings,
) -> None:
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "c": rng.normal(size=400)})
    y = 4 * X["a"] + X["b"] + 0.5 * X["c"]
    for _ in range(2):  # v1 and an identical retrain v2
        modelyard.publish("gate", _forest(X, y), X, y, alias="production" if _ == 0 else None,
                          settings=sqlite_settings)
    broken = X.assign(a=0.0)  # the upstream column was emptied: still sent, no longer learnt from
    modelyard.publish("gate", _forest(broken, y), X, y, settings=sqlite_settings)
    registry = Registry(sqlite_settings)

    same = run_gates(registry, "gate", 2, benchmark=False)
    gate = next(g for g in same.gates if g.gate == "importance")
    assert gate.skipped is None and gate.passed

    removed = run_gates(registry, "gate", 3, benchmark=False)
    gate = next(g for g in removed.gates if g.gate == "importance")
    assert not gate.passed and not removed.passed
    assert any("feature 'a'" in r and "accidentally removed" in r for r in removed.reasons)


def test_without_shap_the_error_says_how_to_install_it_and_publish_still_works(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)
    with pytest.raises(ExplainerUnavailableError, match=r"pip install 'modelyard\[explain\]'"):
        load_shap()
    X = pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 7})
    modelyard.publish("noshap", _forest(X, X["a"]), X, X["a"], alias="production", settings=sqlite_settings)
    assert Registry(sqlite_settings).resolve("noshap@production").manifest.global_importance is None
