"""Compiling pipelines to ONNX: kept only with parity, refused (with the reason) otherwise."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from modelyard.runtime import fastpath
from modelyard.runtime.columns import Columns
from modelyard.runtime.fastpath import OnnxRunner, check_parity, compile_fast_path, frame_columns, probe_rows
from modelyard.schema import InputSchema

NUMERIC = ["area_sqm", "bedrooms", "year_built", "year_renovated", "lot_sqm", "school_rating"]
CATEGORICAL = ["neighborhood", "house_type", "condition", "heating"]


@pytest.fixture(scope="module")
def data(houses_frame: pd.DataFrame) -> tuple[InputSchema, pd.DataFrame, np.ndarray]:
    frame = houses_frame.head(1500)
    schema = InputSchema.infer(frame[NUMERIC + CATEGORICAL], categorical=CATEGORICAL)
    return schema, schema.validate_rows(frame[NUMERIC + CATEGORICAL]), frame["price"].to_numpy()


def house_pipeline(estimator: Any) -> Pipeline:
    """The shape the house-price spec builds: impute + scale numbers, impute + one-hot categories."""
    return Pipeline([
        ("preprocess", ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
             NUMERIC),
            ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                              ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
             CATEGORICAL),
        ])),
        ("model", estimator),
    ])


def onnx_predict(compiled: Any, schema: InputSchema, frame: pd.DataFrame) -> np.ndarray:
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression")
    feeds = runner.feeds(frame_columns(frame))
    assert feeds is not None
    return runner.run(feeds)


def test_house_price_regressor_compiles_with_exact_parity(data: Any) -> None:
    schema, X, y = data
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=40, random_state=0)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.iloc[:800], task="regression")
    info = compiled.info
    assert info["enabled"] and info["kind"] == "onnx" and compiled.onnx_bytes
    assert info["max_abs_diff"] <= info["tolerance"] and info["rows_checked"] > 800
    # every row, including rows never seen: missing values everywhere allowed, unseen categories
    rows = X.iloc[800:].reset_index(drop=True)
    odd = rows.head(50).copy()
    odd.loc[:, "year_renovated"] = np.nan
    odd.loc[::2, "heating"] = np.nan
    odd.loc[1::2, "neighborhood"] = "Atlantis"
    odd = schema.validate_rows(odd)
    for frame in (rows, odd):
        np.testing.assert_array_equal(onnx_predict(compiled, schema, frame), pipe.predict(frame))


def test_probe_rows_add_missing_and_unseen_values(data: Any) -> None:
    schema, X, _ = data
    probe = probe_rows(X.head(10), schema, per_case=2)
    nullable = [c.name for c in schema.columns if c.nullable]
    assert len(probe) == 10 + 2 * (len(nullable) + len(CATEGORICAL))
    assert probe.iloc[10:]["neighborhood"].astype(str).str.contains("unseen").any()


def test_linear_classifier_has_identical_labels_and_close_probabilities(data: Any) -> None:
    schema, X, y = data
    labels = np.where(y > np.median(y), "expensive", "cheap").astype(object)
    pipe = house_pipeline(LogisticRegression(max_iter=500)).fit(X, labels)
    compiled = compile_fast_path(pipe, schema, X, task="classification", label_dtype="object")
    assert compiled.info["enabled"], compiled.info
    assert compiled.info["label_mismatches"] == 0 and compiled.info["max_abs_diff"] <= 1e-9
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="classification", label_dtype="object")
    feeds = runner.feeds(frame_columns(X))
    assert feeds is not None
    np.testing.assert_array_equal(runner.run(feeds), pipe.predict(X))
    np.testing.assert_allclose(runner.run(feeds, proba=True), pipe.predict_proba(X), rtol=0, atol=1e-9)


def test_a_lambda_step_cannot_be_converted_and_is_refused_with_the_reason(data: Any) -> None:
    schema, X, y = data
    log = FunctionTransformer(lambda a: np.log1p(np.abs(a)))
    pre = house_pipeline(Ridge()).steps[0][1]
    pipe = Pipeline([("pre", pre), ("log", log), ("model", Ridge())]).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X, task="regression")
    assert not compiled.info["enabled"] and compiled.onnx_bytes is None
    assert compiled.info["kind"] == "sklearn" and "conversion failed" in compiled.info["reason"]
    assert compiled.extra_files == {}


class MedianRegressor(RegressorMixin, BaseEstimator):
    """An estimator no converter knows."""

    def fit(self, X: Any, y: Any) -> MedianRegressor:
        self.median_ = float(np.median(y))
        return self

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.median_)


def test_a_custom_estimator_is_refused(data: Any) -> None:
    schema, X, y = data
    pipe = house_pipeline(MedianRegressor()).fit(X, y)
    info = compile_fast_path(pipe, schema, X, task="regression").info
    assert not info["enabled"] and "MedianRegressor" in info["reason"]


def test_a_graph_that_disagrees_is_refused_with_the_measured_difference(data: Any) -> None:
    schema, X, y = data
    compiled_a = compile_fast_path(house_pipeline(Ridge(alpha=1.0)).fit(X, y), schema, X, task="regression")
    pipe_b = house_pipeline(Ridge(alpha=50.0)).fit(X, y)  # what scikit-learn would answer instead
    runner = OnnxRunner(compiled_a.onnx_bytes, schema, task="regression")  # type: ignore[arg-type]
    info = check_parity(pipe_b, runner, probe_rows(X, schema), task="regression", reference_rows=len(X))
    assert not info["enabled"] and info["kind"] == "sklearn"
    assert info["reason"].startswith("parity check failed") and info["max_abs_diff"] > info["tolerance"] > 0


def test_a_graph_onnx_runtime_cannot_run_is_refused(data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    schema, X, y = data
    pipe = house_pipeline(Ridge()).fit(X, y)
    monkeypatch.setattr(fastpath, "convert", lambda *a, **k: b"\x08\x07not a graph")
    info = compile_fast_path(pipe, schema, X, task="regression").info
    assert not info["enabled"] and info["reason"].startswith("the ONNX model did not run")


def test_an_empty_string_category_is_not_fed_to_the_graph(data: Any) -> None:
    schema, X, y = data
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=10)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.head(300), task="regression")
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression")  # type: ignore[arg-type]
    rows = schema.validate_rows(X.head(3).assign(condition=["", "good", None]))
    assert runner.feeds(frame_columns(rows)) is None  # "" would read as missing: scikit-learn must answer


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_a_few_rows_are_fed_value_by_value_as_the_array_path_feeds_them(
        data: Any, rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    _, X, y = data
    X = X.copy()
    X.loc[::50, ["neighborhood", "heating"]] = None  # categories missing in training: nullable columns
    schema = InputSchema.infer(X, categorical=CATEGORICAL)
    X = schema.validate_rows(X)
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=10)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.head(300), task="regression")
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression")  # type: ignore[arg-type]
    frame = X.iloc[1:rows + 1].reset_index(drop=True)
    frame.loc[0, "neighborhood"] = None  # a missing category, as JSON null and as NaN
    frame.loc[rows - 1, "heating"] = np.nan
    columns = frame_columns(schema.validate_rows(frame))
    small = runner.feeds(columns)
    monkeypatch.setattr(fastpath, "SMALL_FEED_ROWS", 0)  # the same rows through the numpy path
    large = runner.feeds(columns)
    assert small is not None and large is not None and small.keys() == large.keys()
    for name in large:
        assert small[name].shape == large[name].shape and small[name].dtype == large[name].dtype, name
        np.testing.assert_array_equal(small[name], large[name], err_msg=name)
    np.testing.assert_array_equal(runner.run(small), pipe.predict(frame))


@pytest.mark.parametrize("change", [{}, {"neighborhood": None}, {"heating": float("nan")}, {"area_sqm": None},
                                    {"condition": fastpath.MISSING_STRING}, {"house_type": 3}])
def test_one_row_is_fed_as_its_columns_would_be(data: Any, change: dict[str, Any]) -> None:
    """``feeds_of_row`` (a one-row request's values: one array for the numeric inputs, one cell a string)
    gives the column path's graph inputs, refuses what it refuses (the missing-string marker), and leaves
    what it cannot judge to it."""
    _, X, y = data
    X = X.copy()
    X.loc[::50, ["neighborhood", "heating"]] = None  # nullable categories
    schema = InputSchema.infer(X, categorical=CATEGORICAL)
    X = schema.validate_rows(X)
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=10)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.head(300), task="regression")
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression")  # type: ignore[arg-type]
    row = {**X.iloc[7].to_dict(), **change}
    one = Columns.one_row([row[c.name] for c in schema.columns], tuple(
        (c.name, np.float64 if c.kind == "numeric" else object) for c in schema.columns))
    assert one.row == row
    fed = runner.feeds_of_row(row)
    expected = runner.feeds(one.data)
    if "house_type" in change:  # not a string: the column path judges it
        assert fed is fastpath.ROW_UNDECIDED
        return
    if expected is None:
        assert fed is None and "condition" in change
        return
    assert fed is not None and fed.keys() == expected.keys()
    for name in expected:
        assert fed[name].shape == expected[name].shape and fed[name].dtype == expected[name].dtype, name
        np.testing.assert_array_equal(fed[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(runner.run(fed), pipe.predict(pd.DataFrame([row])))
    assert one.row is None  # an array was made of it: the columns now answer


def _booster(module: str, cls: str, **params: Any) -> Any:
    return getattr(pytest.importorskip(module), cls)(**params)


# Known fault: in a freshly made venv (CI) onnxmltools' LightGBM converter is not registered with skl2onnx
# (MissingShapeCalculator), so LightGBM falls back to scikit-learn there; it takes the fast path in the
# development venv. Not yet understood; recorded, not hidden.
COMMON_ESTIMATORS = [
    pytest.param(lambda: RandomForestRegressor(n_estimators=8, random_state=0), "regression", id="rf-reg"),
    pytest.param(lambda: ExtraTreesRegressor(n_estimators=8, random_state=0), "regression", id="et-reg"),
    pytest.param(lambda: GradientBoostingRegressor(n_estimators=15, random_state=0), "regression", id="gb-reg"),
    pytest.param(lambda: HistGradientBoostingRegressor(max_iter=15), "regression", id="hgb-reg"),
    pytest.param(lambda: LinearRegression(), "regression", id="linear"),
    pytest.param(lambda: Ridge(), "regression", id="ridge"),
    pytest.param(lambda: RandomForestClassifier(n_estimators=8, random_state=0), "binary", id="rf-clf"),
    pytest.param(lambda: ExtraTreesClassifier(n_estimators=8, random_state=0), "multiclass", id="et-clf"),
    pytest.param(lambda: GradientBoostingClassifier(n_estimators=10, random_state=0), "binary", id="gb-clf"),
    pytest.param(lambda: GradientBoostingClassifier(n_estimators=5, random_state=0), "multiclass", id="gb-clf3"),
    pytest.param(lambda: HistGradientBoostingClassifier(max_iter=10), "binary", id="hgb-clf"),
    pytest.param(lambda: HistGradientBoostingClassifier(max_iter=10), "multiclass", id="hgb-clf3"),
    pytest.param(lambda: LogisticRegression(max_iter=300), "multiclass", id="logistic"),
    pytest.param(lambda: _booster("lightgbm", "LGBMRegressor", n_estimators=15, verbose=-1), "regression",
                 id="lgbm-reg"),
    pytest.param(lambda: _booster("lightgbm", "LGBMClassifier", n_estimators=15, verbose=-1), "multiclass",
                 id="lgbm-clf"),
]


@pytest.mark.parametrize(("make", "kind"), COMMON_ESTIMATORS)
def test_every_common_estimator_takes_the_fast_path_and_matches_sklearn(data: Any, make: Any, kind: str) -> None:
    schema, X, y = data
    X, y = X.head(700), y[:700]
    if kind == "binary":
        target: Any = np.where(y > np.median(y), "expensive", "cheap").astype(object)
    elif kind == "multiclass":
        target = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3])).astype(np.int64)
    else:
        target = y
    task = "regression" if kind == "regression" else "classification"
    label_dtype = None if task == "regression" else str(np.asarray(target).dtype)
    pipe = house_pipeline(make()).fit(X, target)
    compiled = compile_fast_path(pipe, schema, X.head(400), task=task, label_dtype=label_dtype)
    info = compiled.info
    assert info["enabled"] and info["kind"] == "onnx", info
    runner = OnnxRunner(compiled.onnx_bytes, schema, task=task, label_dtype=label_dtype)  # type: ignore[arg-type]
    rows = X.iloc[400:].reset_index(drop=True)  # rows the parity check never saw
    feeds = runner.feeds(frame_columns(rows))
    assert feeds is not None
    if task == "regression":
        np.testing.assert_allclose(runner.run(feeds), pipe.predict(rows), rtol=0, atol=info["tolerance"])
    else:
        np.testing.assert_array_equal(runner.run(feeds), pipe.predict(rows))
        np.testing.assert_allclose(runner.run(feeds, proba=True), pipe.predict_proba(rows), rtol=0,
                                   atol=info["tolerance"])


def test_xgboost_falls_back_to_sklearn_and_says_why(data: Any) -> None:
    schema, X, y = data
    pipe = house_pipeline(_booster("xgboost", "XGBRegressor", n_estimators=10)).fit(X.head(500), y[:500])
    info = compile_fast_path(pipe, schema, X.head(300), task="regression").info
    if info["enabled"]:  # a later onnxmltools that converts XGBoost 3 right: then it must be within tolerance
        assert info["max_abs_diff"] <= info["tolerance"]
    else:
        assert info["kind"] == "sklearn" and info["reason"].startswith(("parity check failed", "ONNX conv"))


def test_the_runner_feeds_each_column_group_as_one_input_with_the_same_answers(data: Any) -> None:
    """skl2onnx joins each ColumnTransformer part's one-column inputs with a Concat; the runner's graph takes
    each part as one input instead (``merge_column_inputs``): the same predictions, the bundle's graph kept."""
    import onnxruntime as ort

    from modelyard.runtime.onnxconv import merge_column_inputs

    schema, X, y = data
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=20, random_state=0)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.head(400), task="regression")
    assert compiled.onnx_bytes is not None
    _, merged = merge_column_inputs(compiled.onnx_bytes)
    assert sorted(merged.values()) == sorted([tuple(CATEGORICAL), tuple(NUMERIC)])
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression")
    assert sorted(i.name for i in runner.session_.get_inputs()) == sorted(merged)
    rows = X.iloc[400:700].reset_index(drop=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # as the runner: more threads add the trees' sums in another order
    as_converted = ort.InferenceSession(compiled.onnx_bytes, options, providers=["CPUExecutionProvider"])
    columns = frame_columns(rows)
    one_each = {c: (columns[c].astype(np.float64) if c in NUMERIC else columns[c].astype(object)).reshape(-1, 1)
                for c in NUMERIC + CATEGORICAL}
    feeds = runner.feeds(columns)
    assert feeds is not None
    np.testing.assert_array_equal(runner.run(feeds), as_converted.run(None, one_each)[0].reshape(-1))
    np.testing.assert_array_equal(runner.run(feeds), pipe.predict(rows))


def test_inputs_a_concat_does_not_take_alone_stay_one_column_inputs() -> None:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from modelyard.runtime.onnxconv import merge_column_inputs

    def graph(extra_use: bool) -> bytes:
        inputs = [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [None, 1]) for n in "abc"]
        nodes = [helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
                 helper.make_node("Concat", ["ab", "c"], ["abc"], axis=1)]
        outputs = [helper.make_tensor_value_info("abc", TensorProto.DOUBLE, [None, 3])]
        if extra_use:  # b is also used by another node: its Concat is left alone
            nodes.append(helper.make_node("Neg", ["b"], ["minus_b"]))
            outputs.append(helper.make_tensor_value_info("minus_b", TensorProto.DOUBLE, [None, 1]))
        model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                                  opset_imports=[helper.make_opsetid("", 17)])
        return bytes(model.SerializeToString())

    plain = graph(extra_use=True)
    assert merge_column_inputs(plain) == (plain, {})
    merged_bytes, merged = merge_column_inputs(graph(extra_use=False))
    assert merged == {"ab": ("a", "b")}  # "ab" joins inputs; the second Concat joins a computed tensor
    session = ort.InferenceSession(merged_bytes, providers=["CPUExecutionProvider"])
    assert sorted(i.name for i in session.get_inputs()) == ["ab", "c"]
    out = session.run(None, {"ab": np.array([[1.0, 2.0], [4.0, 5.0]]), "c": np.array([[3.0], [6.0]])})[0]
    np.testing.assert_array_equal(out, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])


def test_a_thread_that_runs_alone_runs_a_large_batch_whole_with_the_same_answers(
        data: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch executor keeps a chunk per core in flight itself: its threads' calls are not cut in two."""
    import threading

    schema, X, y = data
    pipe = house_pipeline(HistGradientBoostingRegressor(max_iter=10, random_state=0)).fit(X, y)
    compiled = compile_fast_path(pipe, schema, X.head(300), task="regression")
    assert compiled.onnx_bytes is not None
    runner = OnnxRunner(compiled.onnx_bytes, schema, task="regression", workers=2)
    rows = pd.concat([X] * (fastpath.PARALLEL_MIN_ROWS // len(X) + 1), ignore_index=True)
    feeds = runner.feeds(frame_columns(rows))
    assert feeds is not None
    cut = runner.run(feeds)  # this thread: cut into one chunk per worker
    used: list[int] = []
    real_pool = fastpath._pool
    monkeypatch.setattr(fastpath, "_pool", lambda workers: used.append(workers) or real_pool(workers))
    runner.run(feeds)
    assert used == [2]
    whole: list[np.ndarray] = []

    def alone() -> None:
        fastpath.run_alone_in_this_thread()
        whole.append(runner.run(feeds))

    t = threading.Thread(target=alone)
    t.start()
    t.join()
    assert used == [2], "a thread running alone used the chunk pool"
    np.testing.assert_array_equal(whole[0], cut)
    np.testing.assert_array_equal(cut, pipe.predict(rows))
