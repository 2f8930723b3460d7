"""The wire formats on their own: v1 and v2 bodies become rows (or a clear SchemaError naming the field)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from modelyard.errors import SchemaError
from modelyard.serve import v1, v2
from modelyard.serve.http import error_body, protocol_message, protocol_status


def test_v1_parses_instances_and_the_probabilities_flag() -> None:
    parsed = v1.parse({"instances": [{"a": 1}], "probabilities": True})
    assert parsed.rows == [{"a": 1}] and parsed.probabilities


@pytest.mark.parametrize(("body", "field"), [
    ([1, 2], "instances"), ({"rows": []}, "instances"), ({"instances": {"a": 1}}, "instances"),
    ({"instances": [], "probabilities": "yes"}, "probabilities"),
])
def test_v1_refuses_bodies_that_are_not_instances(body: Any, field: str) -> None:
    with pytest.raises(SchemaError) as info:
        v1.parse(body)
    assert info.value.field == field


def test_v2_one_tensor_per_column_becomes_rows() -> None:
    parsed = v2.parse({"id": "a", "inputs": [
        {"name": "x", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
        {"name": "c", "shape": [2, 1], "datatype": "BYTES", "data": [["u"], ["v"]]},
    ]})
    assert parsed.rows == [{"x": 1.0, "c": "u"}, {"x": 2.0, "c": "v"}]
    assert parsed.meta == {"outputs": ["predict"], "id": "a"} and not parsed.probabilities


def test_v2_a_single_matrix_takes_the_schema_column_order() -> None:
    parsed = v2.parse({"inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64",
                                   "data": [1, 2, 3, 4]}], "outputs": [{"name": "predict_proba"}]})
    assert parsed.rows == [] and parsed.probabilities and parsed.complete is not None
    model = SimpleNamespace(name="m", schema=SimpleNamespace(names=["p", "q"]))
    assert parsed.complete(model) == [{"p": 1, "q": 2}, {"p": 3, "q": 4}]  # type: ignore[arg-type]
    wrong = SimpleNamespace(name="m", schema=SimpleNamespace(names=["p", "q", "r"]))
    with pytest.raises(SchemaError, match="has 2 columns; m takes 3"):
        parsed.complete(wrong)  # type: ignore[arg-type]


@pytest.mark.parametrize(("body", "field"), [
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP64", "data": [1, 2]}]}, "x"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}]}, "x"),
    ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP64", "data": [1]}]}, "x"),
    ({"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP64", "data": [1]}]}, "x"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": 1}]}, "x"),
    ({"inputs": [{"shape": [1], "datatype": "FP64", "data": [1]}]}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]},
                 {"name": "y", "shape": [2], "datatype": "FP64", "data": [1, 2]}]}, "inputs"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}], "outputs": [{"name": "z"}]},
     "outputs"),
])
def test_v2_refuses_malformed_tensors_naming_the_input(body: dict[str, Any], field: str) -> None:
    with pytest.raises(SchemaError) as info:
        v2.parse(body)
    assert info.value.field == field


def test_error_body_always_has_code_message_field_and_row() -> None:
    body = error_body(SchemaError("bad", field="x", row=3))
    assert body == {"error": {"code": "schema_error", "message": "bad", "field": "x", "row": 3,
                              "problems": [{"row": 3, "field": "x", "reason": "bad"}]}}
    assert error_body(SchemaError("worse"))["error"]["field"] is None


def test_error_body_takes_field_row_and_problems_from_the_schema_error_not_its_text() -> None:
    from modelyard.errors import SchemaProblem

    err = SchemaError(problems=[SchemaProblem("'x' is not a number", "a", 2, "value"),
                                SchemaProblem("missing column 'b'", "b", 5, "row")])
    body = error_body(err)["error"]
    assert (body["field"], body["row"]) == ("a", 2)
    assert body["problems"] == [{"row": 2, "field": "a", "reason": "'x' is not a number"},
                                {"row": 5, "field": "b", "reason": "missing column 'b'"}]
    assert body["message"] == "column 'a' row 2: 'x' is not a number (and 1 more problem: row 5 is missing column 'b')"
    many = error_body(SchemaError(problems=[SchemaProblem("bad", "a", i, "value") for i in range(150)]))["error"]
    assert len(many["problems"]) == 100 and many["problems_total"] == 150
def test_protocol_error_names_field_and_row_inside_the_message() -> None:
    assert protocol_message(SchemaError("not a number", field="area_sqm", row=3)) == \
        "not a number (field area_sqm, row 3)"
    assert protocol_message(SchemaError("bad", field="x")) == "bad (field x)"
    assert protocol_message(SchemaError("worse")) == "worse"
    assert protocol_status(SchemaError("bad")) == 400
