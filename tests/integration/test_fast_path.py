"""Train → publish → load with the ONNX fast path: parity on the reference set, fallback, integrity."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

import modelyard
from modelyard.bundle import ONNX_FILE
from modelyard.config import Settings
from modelyard.errors import IntegrityError
from modelyard.registry import Registry
from modelyard.runtime import Model
from tests.conftest import train_and_publish


def reference_and_sklearn(model: Model) -> tuple[pd.DataFrame, Model]:
    """The version's whole reference set, and the same version loaded without its fast path."""
    return model.bundle_.reference_inputs(), Model.load(model.bundle_, fast_path=False)


def test_house_prices_fast_path_matches_scikit_learn_on_the_whole_reference_set(
    sqlite_settings: Settings, house_spec: Path
) -> None:
    train_and_publish(house_spec, sqlite_settings)
    model = modelyard.load("house-prices", settings=sqlite_settings)
    fast = model.manifest.fast_path
    assert fast is not None
    assert fast.enabled and fast.kind == "onnx" and model.fast_path == "onnx"
    assert fast.max_abs_diff <= fast.tolerance and fast.rows_checked >= fast.reference_rows
    assert ONNX_FILE in model.manifest.files  # its checksum is in the manifest like any other file
    reference, sklearn = reference_and_sklearn(model)
    assert len(reference) == fast.reference_rows > 0
    expected = model.pipeline_.predict(model.schema.validate_rows(reference))
    np.testing.assert_array_equal(model.predict(reference), expected)
    np.testing.assert_array_equal(sklearn.predict(reference), expected)
    records = reference.head(100).to_dict("records")
    np.testing.assert_array_equal(model.predict(records), expected[:100])
    np.testing.assert_array_equal(model.predict(records[7]), expected[7:8])
    copy = pickle.loads(pickle.dumps(model))  # a model shipped to another process keeps its fast path
    assert copy.fast_path == "onnx"
    np.testing.assert_array_equal(copy.predict(records), expected[:100])


def test_breast_cancer_fast_path_gives_the_same_labels_and_probabilities(
    sqlite_settings: Settings, cancer_spec: Path
) -> None:
    train_and_publish(cancer_spec, sqlite_settings)
    model = modelyard.load("breast-cancer", settings=sqlite_settings)
    fast = model.manifest.fast_path
    assert fast is not None
    assert fast.enabled and fast.label_mismatches == 0 and fast.max_abs_diff <= fast.tolerance
    reference, sklearn = reference_and_sklearn(model)
    labels = model.predict(reference)
    assert labels.dtype == sklearn.predict(reference).dtype
    np.testing.assert_array_equal(labels, sklearn.predict(reference))
    np.testing.assert_allclose(model.predict_proba(reference), sklearn.predict_proba(reference),
                               rtol=0, atol=fast.tolerance)
    assert set(labels) <= {"benign", "malignant"}


def sqrt_abs(a: np.ndarray) -> np.ndarray:
    return np.sqrt(np.abs(a))


def test_a_pipeline_onnx_cannot_convert_falls_back_and_still_predicts(
    sqlite_settings: Settings, houses_frame: pd.DataFrame
) -> None:
    X = houses_frame[["area_sqm", "bedrooms", "neighborhood"]].head(400)
    y = houses_frame["price"].head(400)
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["neighborhood"])],
                                  remainder="passthrough", sparse_threshold=0)),
        ("sqrt", FunctionTransformer(sqrt_abs)),  # any Python function: ONNX cannot express it
        ("ridge", Ridge()),
    ]).fit(X, y)
    modelyard.publish("lambda-model", pipe, X, y, alias="production", settings=sqlite_settings)
    model = modelyard.load("lambda-model", settings=sqlite_settings)
    fast = model.manifest.fast_path
    assert fast is not None
    assert fast.enabled is False and fast.kind == "sklearn" and "conversion failed" in fast.reason
    assert model.fast_path == "sklearn" and ONNX_FILE not in model.manifest.files
    np.testing.assert_array_equal(model.predict(X.head(50)), pipe.predict(X.head(50)))


def test_a_flipped_byte_in_the_onnx_file_is_refused(sqlite_settings: Settings, house_spec: Path) -> None:
    train_and_publish(house_spec, sqlite_settings)
    registry = Registry(sqlite_settings)
    modelyard.load("house-prices", settings=sqlite_settings)  # unpacks into the cache
    cached = registry.cache_dir / registry.resolve("house-prices").archive_sha256 / ONNX_FILE
    data = bytearray(cached.read_bytes())
    data[len(data) // 2] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        modelyard.load("house-prices", settings=sqlite_settings)
    assert err.value.file == ONNX_FILE and ONNX_FILE in str(err.value)


def test_an_empty_string_category_is_answered_by_scikit_learn(sqlite_settings: Settings,
                                                              house_spec: Path) -> None:
    train_and_publish(house_spec, sqlite_settings)
    model = modelyard.load("house-prices", settings=sqlite_settings)
    rows = model.bundle_.reference_inputs().head(3).to_dict("records")
    rows[1]["heating"] = ""  # the graph would read this as missing; scikit-learn sees an unseen category
    expected = model.pipeline_.predict(model.schema.validate_rows(rows))
    np.testing.assert_array_equal(model.predict(rows), expected)
    assert model.fast_path_fallbacks_ == 1


def test_models_show_prints_the_fast_path_decision(sqlite_settings: Settings, house_spec: Path) -> None:
    from tests.conftest import run_cli

    train_and_publish(house_spec, sqlite_settings)
    out = run_cli("models", "show", "house-prices", settings=sqlite_settings)
    assert out.returncode == 0, out.stderr
    assert "fast path: onnx (ONNX Runtime, max |onnx - sklearn| = 0" in out.stdout
