"""Import an MLflow scikit-learn model folder as a modelyard version (mlflow itself is optional)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from modelyard.api import publish
from modelyard.config import Settings
from modelyard.errors import BundleError
from modelyard.pipeline.sources import read_source


def read_mlflow_sklearn(path: Path) -> tuple[Any, pd.DataFrame | None]:
    """The fitted estimator and the saved input example (if any) of an MLflow model folder."""
    mlmodel = path / "MLmodel"
    if not mlmodel.exists():
        raise BundleError(f"{path} is not an MLflow model folder: MLmodel is missing", file="MLmodel")
    meta = yaml.safe_load(mlmodel.read_text())
    flavor = (meta.get("flavors") or {}).get("sklearn")
    if not flavor:
        raise BundleError(f"{path} has no sklearn flavor (flavors: {sorted(meta.get('flavors') or {})})",
                          file="MLmodel")
    try:
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(str(path))
    except ImportError:
        pickled = path / flavor.get("pickled_model", "model.pkl")
        fmt = flavor.get("serialization_format", "cloudpickle")
        if fmt not in ("cloudpickle", "pickle"):
            raise BundleError(f"{path} is saved as {fmt}: pip install 'modelyard[mlflow]' to read it") from None
        with open(pickled, "rb") as fh:
            if fmt == "cloudpickle":
                import cloudpickle

                model = cloudpickle.load(fh)
            else:
                model = pickle.load(fh)
    example = None
    info = meta.get("saved_input_example_info") or {}
    example_file = path / info.get("artifact_path", "input_example.json")
    if example_file.exists():
        raw = json.loads(example_file.read_text())
        if isinstance(raw, dict) and "columns" in raw and "data" in raw:
            example = pd.DataFrame(raw["data"], columns=raw["columns"])
        elif isinstance(raw, dict) and "dataframe_split" in raw:
            split = raw["dataframe_split"]
            example = pd.DataFrame(split["data"], columns=split["columns"])
        elif isinstance(raw, list):
            example = pd.DataFrame(raw)
    return model, example


def import_mlflow(
    path: Path,
    *,
    name: str,
    data: str | None = None,
    target: str | None = None,
    alias: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Publish an MLflow sklearn model; ``data`` (CSV/Parquet) gives the schema and the reference set."""
    model, example = read_mlflow_sklearn(Path(path))
    y = None
    if data is not None:
        frame = read_source(data).frame
        if target and target in frame.columns:
            y = frame[target].to_numpy()
            frame = frame.drop(columns=[target])
        names = list(getattr(model, "feature_names_in_", frame.columns))
        X = frame[names]
    elif example is not None:
        X = example
    else:
        raise BundleError(
            f"{path} has no input example: pass --data with rows like the training data so the schema and "
            "the reference set can be built"
        )
    return publish(name, model, X, y, alias=alias, settings=settings, source=f"mlflow:{Path(path).resolve()}")
