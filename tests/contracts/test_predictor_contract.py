"""The predictor contract, one set of checks over both ways a ``Model`` answers: the scikit-learn pipeline
and the ONNX fast path, for a regressor (house prices) and a classifier (breast cancer).

Every implementation must give the same answers within the manifest's fast-path tolerance, the same
``SchemaError`` (message, field, row) for the same bad rows, the same ``predict_partial`` semantics (one
prediction or one error per row, never a failed call for bad rows), and, for a classifier, probabilities
that agree with its labels.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import PredictionError, SchemaError
from modelyard.runtime import Model
from tests.batchstream_helpers import cancer_bundle_once, house_bundle_once

PATHS = ["sklearn", "onnx"]
BUNDLES = {"regressor": house_bundle_once, "classifier": cancer_bundle_once}
_models: dict[tuple[str, str], Model] = {}


@pytest.fixture(params=[(kind, path) for kind in BUNDLES for path in PATHS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Model:
    kind, path = request.param
    if (kind, path) not in _models:
        loaded = Model.load(BUNDLES[kind](tmp_path_factory), fast_path=path == "onnx")
        assert loaded.fast_path == path, f"the {kind} bundle has no working {path} path: {loaded.fast_path_error_}"
        _models[(kind, path)] = loaded
    return _models[(kind, path)]


def _rows(model: Model, n: int = 40) -> list[dict[str, Any]]:
    frame = model.bundle_.reference_inputs().head(n)
    return list(json.loads(frame.to_json(orient="records")))


def _tolerance(model: Model) -> float:
    """The absolute difference the fast path was published with (its parity check's bound)."""
    return float((model.manifest.fast_path.tolerance if model.manifest.fast_path else None) or 1e-9)


def _spoiled(model: Model, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """``rows`` with three made bad: a numeric column given a word, a row without a column, a null."""
    numeric = next(c for c in model.schema.columns if c.kind == "numeric" and not c.nullable)
    first = model.schema.columns[0].name
    bad = [dict(r) for r in rows]
    bad[2][numeric.name] = "many"
    del bad[5][first]
    bad[9][numeric.name] = None
    return bad, {2: numeric.name, 5: first, 9: numeric.name}


def test_answers_agree_with_the_pipeline_within_the_manifest_tolerance(model: Model) -> None:
    rows = _rows(model)
    expected = np.asarray(model.pipeline_.predict(model.validate(rows)))
    got = model.predict(rows)
    assert got.shape == (len(rows),)
    if model.task == "classification":
        assert got.tolist() == expected.tolist()
    else:
        np.testing.assert_allclose(got, expected, rtol=0, atol=_tolerance(model))
    np.testing.assert_array_equal(model.predict(pd.DataFrame(rows)), got)  # a frame answers as its rows do


@pytest.mark.parametrize("case", ["word", "missing column", "null"])
def test_a_bad_row_raises_the_schema_error_naming_its_row_and_field(model: Model, case: str) -> None:
    rows, fields = _spoiled(model, _rows(model, 12))
    row = {"word": 2, "missing column": 5, "null": 9}[case]
    batch = [r for i, r in enumerate(rows) if i not in fields or i == row]
    position = [i for i in range(len(rows)) if i not in fields or i == row].index(row)
    with pytest.raises(SchemaError) as caught:
        model.predict(batch)
    assert (caught.value.row, caught.value.field) == (position, fields[row])
    assert caught.value.status_code == 422
    messages = {"word": "'many' is not a number", "missing column": "is missing column",
                "null": "a value is required"}
    assert messages[case] in caught.value.message and f"row {position}" in caught.value.message


def test_predict_partial_gives_one_result_or_one_error_per_row(model: Model) -> None:
    rows, fields = _spoiled(model, _rows(model))
    result = model.predict_partial(rows, probabilities=model.has_proba)
    assert len(result) == len(rows)
    assert [(e.row, e.field, e.code) for e in result.errors] == [(i, fields[i], "schema_error") for i in sorted(fields)]
    assert all(f"row {e.row}" not in e.reason for e in result.errors)  # the caller names the row its own way
    for error in result.errors:  # ... and naming it gives back the schema's own message for that row
        with pytest.raises(SchemaError) as caught:
            model.predict([rows[error.row]])
        assert error.naming(0) == caught.value.message
    good = [i for i in range(len(rows)) if i not in fields]
    assert result.positions.tolist() == good
    np.testing.assert_array_equal(result.predictions, model.predict([rows[i] for i in good]))
    outcomes = list(result)
    assert [o.row for o in outcomes] == list(range(len(rows)))
    assert [o.ok for o in outcomes] == [i not in fields for i in range(len(rows))]
    if model.has_proba:
        assert result.probabilities is not None
        np.testing.assert_allclose(result.probabilities, model.predict_proba([rows[i] for i in good]))
    else:
        assert result.probabilities is None


def test_predict_partial_of_only_bad_rows_or_no_rows_answers_without_raising(model: Model) -> None:
    rows, fields = _spoiled(model, _rows(model, 10))
    only_bad = [rows[i] for i in sorted(fields)]
    result = model.predict_partial(only_bad)
    assert [e.row for e in result.errors] == [0, 1, 2] and len(result.predictions) == 0
    empty = model.predict_partial([])
    assert len(empty) == 0 and empty.errors == [] and len(empty.predictions) == 0


def test_predict_partial_raises_only_for_a_problem_that_is_no_rows_fault(model: Model) -> None:
    frame = pd.DataFrame(_rows(model, 5)).drop(columns=[model.schema.columns[0].name])
    with pytest.raises(SchemaError, match="missing column"):
        model.predict_partial(frame)


def test_probabilities_agree_with_labels_or_are_refused(model: Model) -> None:
    rows = _rows(model)
    if model.task != "classification":
        with pytest.raises(PredictionError, match="no probabilities"):
            model.predict_proba(rows)
        return
    proba = model.predict_proba(rows)
    classes = model.classes_
    assert classes is not None and proba.shape == (len(rows), len(classes))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    labels = model.predict(rows)
    assert [classes[i] for i in proba.argmax(axis=1)] == labels.tolist()
    expected = model.pipeline_.predict_proba(model.validate(rows))
    np.testing.assert_allclose(proba, expected, atol=_tolerance(model))


def test_a_pickled_model_answers_alike_on_the_same_path(model: Model) -> None:
    rows = _rows(model, 10)
    again = pickle.loads(pickle.dumps(model))
    assert again.fast_path == model.fast_path
    np.testing.assert_array_equal(again.predict(rows), model.predict(rows))
