"""The chunk function and the --from parser, without services."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.batch import BatchError, score_chunk
from modelyard.batch.source import Source
from modelyard.errors import SchemaError
from modelyard.runtime import Model
from tests.batchstream_helpers import house_bundle_once, houses_input, spoil


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(house_bundle_once(tmp_path_factory))


def test_predict_partial_finds_every_bad_row_even_several_in_one_column(model: Model) -> None:
    bad = {0: ("area_sqm", "x"), 5: ("area_sqm", "y"), 6: ("house_type", None), 399: ("bedrooms", [1])}
    frame = spoil(houses_input(400), bad).drop(columns=["id"])
    result = model.predict_partial(frame)
    assert [e.row for e in result.errors] == sorted(bad)
    assert [e.field for e in result.errors] == ["area_sqm", "area_sqm", "house_type", "bedrooms"]
    assert result.errors[0].reason == "column 'area_sqm': 'x' is not a number"
    assert result.errors[0].naming(1000) == "column 'area_sqm' row 1000: 'x' is not a number"
    assert result.positions.tolist() == [i for i in range(400) if i not in bad]
    clean = houses_input(400).drop(columns=["id"]).iloc[result.positions]
    np.testing.assert_allclose(result.predictions, model.predict(clean))
    outcomes = list(result)
    assert len(outcomes) == 400 and not outcomes[5].ok and outcomes[5].error == result.errors[1]
    assert outcomes[1].ok and outcomes[1].prediction == result.predictions[0]


def test_predict_partial_raises_for_a_missing_column(model: Model) -> None:
    with pytest.raises(SchemaError, match="missing column 'bedrooms'"):
        model.predict_partial(houses_input(10).drop(columns=["bedrooms"]))


def test_score_chunk_keeps_input_order_and_names_rejects_by_key_and_input_row(model: Model) -> None:
    frame = spoil(houses_input(50), {10: ("area_sqm", "big")})
    frame.loc[20, "id"] = None
    scored = score_chunk(model, frame, "id", offset=1000)
    assert len(scored.keys) == 48 and scored.n_rows == 50
    assert [(r.key, r.position, r.field) for r in scored.rejected] == [(11, 10, "area_sqm"), (None, 20, "id")]
    assert "row 1010" in scored.rejected[0].reason and scored.rejected[0].row["area_sqm"] == "big"
    expected = model.predict(frame.drop(index=[10, 20]).drop(columns=["id"]))
    np.testing.assert_allclose(scored.predictions, expected)
    assert scored.probabilities is None


def test_without_a_key_the_key_is_the_input_position(model: Model) -> None:
    scored = score_chunk(model, houses_input(5).drop(columns=["id"]), None, offset=70)
    assert scored.keys.tolist() == [70, 71, 72, 73, 74]


@pytest.mark.parametrize(("spec", "kind"), [
    ("SELECT * FROM houses;", "sql"), ("  with x as (select 1) select * from x", "sql"),
    ("houses", "table"), ("analytics.houses", "table"),
])
def test_from_is_a_query_or_a_table(spec: str, kind: str) -> None:
    assert Source.parse(spec).kind == kind
    assert not Source.parse(spec).value.endswith(";")


def test_from_is_a_file_when_it_ends_like_one(tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("a\n1\n")
    assert Source.parse(str(tmp_path / "in.csv")) == Source("file", str((tmp_path / "in.csv").resolve()))
    with pytest.raises(BatchError, match="does not exist"):
        Source.parse(str(tmp_path / "missing.parquet"))
    with pytest.raises(BatchError, match="neither a SELECT query"):
        Source.parse("drop table houses")


def test_a_rejected_row_gives_every_problem_of_its_own_renumbered_and_none_of_the_others(model: Model) -> None:
    frame = spoil(houses_input(30), {4: ("area_sqm", "big"), 9: ("bedrooms", "many")})
    frame.loc[4, "bedrooms"] = "lots"  # row 4 has two problems
    scored = score_chunk(model, frame, "id", offset=500)
    reasons = {r.position: r.reason for r in scored.rejected}
    assert reasons == {4: "column 'area_sqm' row 504: 'big' is not a number; "
                          "column 'bedrooms' row 504: 'lots' is not a number",
                       9: "column 'bedrooms' row 509: 'many' is not a number"}


def test_probability_json_says_what_a_dict_per_row_through_orjson_said() -> None:
    import json

    import orjson

    from modelyard.batch.chunk import probability_json

    rng = np.random.default_rng(3)
    proba = np.vstack([rng.random((500, 3)), rng.random((50, 3)) * 1e-4,
                       [[0.0, 1.0, 0.5], [1e-7, 5e-7, 0.9999996], [np.nan, np.inf, -0.0], [1e-6, 2.5e-5, 1e-4]]])
    labels = ["no", 'say "yes"', "ünï"]
    got = [json.loads(t) for t in probability_json(proba, labels).to_pylist()]
    want = [json.loads(orjson.dumps(dict(zip(labels, row, strict=True))))
            for row in proba.round(6).tolist()]
    assert got == want
    assert [[type(v) for v in row.values()] for row in got] == [[type(v) for v in row.values()] for row in want]
    assert probability_json(proba[:0], labels).to_pylist() == []
