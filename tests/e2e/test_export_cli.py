"""`modelyard export NAME --format onnx --out FILE` as a user runs it, then ONNX Runtime alone runs FILE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd

import modelyard
from modelyard.config import Settings
from tests.conftest import run_cli, train_and_publish


def feeds_from_schema(schema: dict[str, Any], rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """What another program would do with the exported schema: one [N, 1] tensor per input."""
    feeds = {}
    for spec in schema["inputs"]:
        values = rows[spec["name"]]
        if spec["type"] == "tensor(double)":
            feeds[spec["name"]] = values.to_numpy(dtype=np.float64).reshape(-1, 1)
        else:
            text = values.astype(object).where(values.notna(), spec["missing"])
            feeds[spec["name"]] = text.to_numpy(dtype=object).reshape(-1, 1)
    return feeds


def test_export_writes_a_model_onnx_runtime_runs_with_the_same_outputs(
    sqlite_settings: Settings, house_spec: Path, tmp_path: Path
) -> None:
    train_and_publish(house_spec, sqlite_settings)
    out = tmp_path / "export" / "house.onnx"
    result = run_cli("export", "house-prices@production", "--format", "onnx", "--out", str(out),
                     settings=sqlite_settings)
    assert result.returncode == 0, result.stderr
    schema = json.loads((tmp_path / "export" / "house.schema.json").read_text())
    assert schema["model"] == "house-prices" and schema["version"] == 1 and schema["file"] == "house.onnx"
    assert {i["name"] for i in schema["inputs"]} >= {"area_sqm", "neighborhood"}

    model = modelyard.load("house-prices", settings=sqlite_settings)
    rows = model.bundle_.reference_inputs()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run([schema["outputs"][0]["name"]], feeds_from_schema(schema, rows))
    np.testing.assert_allclose(got.ravel(), model.predict(rows), rtol=1e-12)


def test_export_of_a_classifier_has_labels_and_probabilities(
    sqlite_settings: Settings, cancer_spec: Path, tmp_path: Path
) -> None:
    train_and_publish(cancer_spec, sqlite_settings)
    out = tmp_path / "cancer.onnx"
    assert run_cli("export", "breast-cancer", "--out", str(out), settings=sqlite_settings).returncode == 0
    schema = json.loads((tmp_path / "cancer.schema.json").read_text())
    assert schema["classes"] == ["benign", "malignant"] and len(schema["outputs"]) == 2
    model = modelyard.load("breast-cancer", settings=sqlite_settings)
    rows = model.bundle_.reference_inputs()
    labels, proba = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        None, feeds_from_schema(schema, rows))
    np.testing.assert_array_equal(labels.astype(object), model.predict(rows))
    np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=0, atol=1e-9)


def test_export_refuses_an_unknown_format_and_a_model_without_onnx_form(
    sqlite_settings: Settings, houses_frame: pd.DataFrame, tmp_path: Path
) -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from tests.integration.test_fast_path import sqrt_abs

    X = houses_frame[["area_sqm", "bedrooms"]].head(200)
    pipe = make_pipeline(FunctionTransformer(sqrt_abs), Ridge()).fit(X, houses_frame["price"].head(200))
    modelyard.publish("no-onnx", pipe, X, alias="production", settings=sqlite_settings)
    out = tmp_path / "x.onnx"
    bad_format = run_cli("export", "no-onnx", "--format", "pmml", "--out", str(out), settings=sqlite_settings)
    assert bad_format.returncode != 0 and "pmml" in bad_format.stderr
    refused = run_cli("export", "no-onnx", "--out", str(out), settings=sqlite_settings)
    assert refused.returncode == 1 and "has no ONNX form" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) <= 3 and "Traceback" not in refused.stderr
    assert not out.exists()
