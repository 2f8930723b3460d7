"""Train → publish → load → predict gives the raw pipeline's numbers, on SQLite and PostgreSQL."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

import modelyard
from modelyard.config import Settings
from modelyard.errors import IntegrityError, SchemaError
from modelyard.pipeline import load_spec, train
from modelyard.registry import Registry


def test_train_publish_load_predicts_like_the_raw_pipeline(
    any_settings: Settings, house_spec: Path, houses_frame: pd.DataFrame, tmp_path: Path
) -> None:
    result = train(load_spec(house_spec))
    result.write_bundle(tmp_path / "b")
    version = Registry(any_settings).publish(tmp_path / "b", alias="production")
    model = modelyard.load("house-prices", settings=any_settings)
    assert model.version == version == 1
    rows = houses_frame.drop(columns="price").head(200)
    raw = result.pipeline.predict(rows)  # the raw scikit-learn pipeline on the untouched frame
    np.testing.assert_array_equal(model.predict(rows), raw)
    np.testing.assert_array_equal(model.predict(rows.to_dict("records")), raw)
    assert model.predict(rows.iloc[0].to_dict())[0] == raw[0]
    assert set(model.manifest.metrics) == {"r2", "mae", "rmse"}
    assert model.manifest.lineage.data.sha256 == result.data.sha256
    cost = model.manifest.training_cost  # measured around the fit
    assert cost is not None and cost.wall_seconds is not None and cost.wall_seconds > 0
    assert cost.cpu_seconds is not None and cost.peak_memory_mb is not None and cost.peak_memory_mb > 50
    importance = model.manifest.global_importance  # recorded at publish (shap is in the dev extra)
    assert model.manifest.format_version == 2 and importance is not None
    assert set(importance) == {c.name for c in model.manifest.input_schema.columns}


def test_classifier_returns_labels_and_probabilities(sqlite_settings: Settings, cancer_spec: Path,
                                                     tmp_path: Path) -> None:
    result = train(load_spec(cancer_spec))
    result.write_bundle(tmp_path / "b")
    Registry(sqlite_settings).publish(tmp_path / "b", alias="production")
    model = modelyard.load("breast-cancer@production", settings=sqlite_settings)
    rows = result.X_test.head(20)
    np.testing.assert_array_equal(model.predict(rows), result.pipeline.predict(rows))
    np.testing.assert_allclose(model.predict_proba(rows), result.pipeline.predict_proba(rows))
    assert model.classes_ == ["benign", "malignant"]


def test_one_flipped_byte_in_the_stored_archive_is_refused(sqlite_settings: Settings, house_spec: Path,
                                                           tmp_path: Path) -> None:
    result = train(load_spec(house_spec))
    result.write_bundle(tmp_path / "b")
    registry = Registry(sqlite_settings)
    registry.publish(tmp_path / "b", alias="production")
    record = registry.resolve("house-prices")
    archive = registry.store.fetch(record.archive_sha256)
    data = bytearray(archive.read_bytes())
    data[len(data) // 3] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        modelyard.load("house-prices", settings=sqlite_settings)
    assert err.value.file == archive.name


def test_a_changed_file_in_the_unpacked_cache_is_refused(sqlite_settings: Settings, house_spec: Path,
                                                         tmp_path: Path) -> None:
    result = train(load_spec(house_spec))
    result.write_bundle(tmp_path / "b")
    registry = Registry(sqlite_settings)
    registry.publish(tmp_path / "b", alias="production")
    modelyard.load("house-prices", settings=sqlite_settings)  # unpacks into the cache
    cached = registry.cache_dir / registry.resolve("house-prices").archive_sha256 / "model.joblib"
    data = bytearray(cached.read_bytes())
    data[100] ^= 0x01
    cached.write_bytes(bytes(data))
    with pytest.raises(IntegrityError) as err:
        modelyard.load("house-prices", settings=sqlite_settings)
    assert err.value.file == "model.joblib" and "model.joblib" in str(err.value)


def test_missing_column_or_wrong_type_is_our_error(sqlite_settings: Settings, house_spec: Path,
                                                   houses_frame: pd.DataFrame, tmp_path: Path) -> None:
    result = train(load_spec(house_spec))
    result.write_bundle(tmp_path / "b")
    Registry(sqlite_settings).publish(tmp_path / "b", alias="production")
    model = modelyard.load("house-prices", settings=sqlite_settings)
    row = houses_frame.drop(columns="price").iloc[0].to_dict()
    with pytest.raises(SchemaError) as err:
        model.predict({k: v for k, v in row.items() if k != "bedrooms"})
    assert err.value.field == "bedrooms"
    with pytest.raises(SchemaError) as err:
        model.predict({**row, "area_sqm": "large"})
    assert err.value.field == "area_sqm" and "'large'" in err.value.message


def test_publish_a_pipeline_fitted_elsewhere(any_settings: Settings, houses_frame: pd.DataFrame) -> None:
    X = houses_frame[["area_sqm", "bedrooms", "neighborhood"]].head(500)
    y = houses_frame["price"].head(500)
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["neighborhood"])],
                                  remainder="passthrough")),
        ("rf", RandomForestRegressor(n_estimators=10, random_state=0)),
    ]).fit(X, y)
    version = modelyard.publish("byo", pipe, X, y, metrics={"r2": 0.5}, alias="production", settings=any_settings)
    model = modelyard.load("byo", settings=any_settings)
    assert model.version == version
    np.testing.assert_array_equal(model.predict(X.head(50)), pipe.predict(X.head(50)))
    assert model.manifest.metrics == {"r2": 0.5}
    assert {c.name: c.kind for c in model.manifest.input_schema.columns}["neighborhood"] == "categorical"


def test_import_an_mlflow_sklearn_model_folder(sqlite_settings: Settings, houses_frame: pd.DataFrame,
                                               tmp_path: Path) -> None:
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    X = houses_frame[["area_sqm", "bedrooms", "year_built"]].head(400)
    y = houses_frame["price"].head(400)
    pipe = RandomForestRegressor(n_estimators=5, random_state=0).fit(X, y)
    folder = tmp_path / "mlflow-model"
    mlflow_sklearn.save_model(pipe, str(folder), input_example=X.head(5), serialization_format="cloudpickle")
    X.to_csv(tmp_path / "rows.csv", index=False)
    from modelyard.mlflow_import import import_mlflow

    version = import_mlflow(folder, name="from-mlflow", data=str(tmp_path / "rows.csv"), alias="production",
                            settings=sqlite_settings)
    model = modelyard.load("from-mlflow", settings=sqlite_settings)
    assert model.version == version
    np.testing.assert_array_equal(model.predict(X.head(30)), pipe.predict(X.head(30)))
    assert model.manifest.lineage.source.startswith("mlflow:")


def test_archives_hold_only_flat_files(sqlite_settings: Settings, house_spec: Path, tmp_path: Path) -> None:
    result = train(load_spec(house_spec))
    result.write_bundle(tmp_path / "b")
    registry = Registry(sqlite_settings)
    registry.publish(tmp_path / "b")
    with tarfile.open(registry.store.fetch(registry.resolve("house-prices@1").archive_sha256)) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "model.joblib", "model.onnx", "reference.parquet"]
