from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.errors import SchemaError
from modelyard.schema import InputSchema


@pytest.fixture
def schema() -> InputSchema:
    frame = pd.DataFrame({
        "area": [50.0, 80.5, np.nan, 120.0],
        "rooms": [1, 2, 3, 4],
        "city": ["a", "b", "a", None],
        "pool": ["yes", "no", "no", "yes"],
    })
    return InputSchema.infer(frame, categorical=["city", "pool"])


def test_infer_records_kinds_nullability_ranges_and_categories(schema: InputSchema) -> None:
    area, rooms, city, pool = schema.columns
    assert (area.kind, area.nullable, area.min, area.max) == ("numeric", True, 50.0, 120.0)
    assert (rooms.kind, rooms.nullable) == ("numeric", False)
    assert (city.kind, city.nullable, city.categories) == ("categorical", True, ["a", "b"])
    assert pool.categories == ["no", "yes"]


def test_validate_orders_columns_and_coerces_numbers_given_as_strings(schema: InputSchema) -> None:
    out = schema.validate_rows([{"pool": "no", "city": "b", "rooms": "3", "area": 10, "extra": 1}])
    assert list(out.columns) == ["area", "rooms", "city", "pool"]
    assert out["rooms"].dtype == np.float64 and out.loc[0, "rooms"] == 3.0


def test_missing_column_names_the_column_and_row(schema: InputSchema) -> None:
    rows = [{"area": 1, "rooms": 1, "city": "a", "pool": "no"}, {"area": 1, "city": "a", "pool": "no"}]
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(rows)
    assert (err.value.field, err.value.row) == ("rooms", 1)
    assert "rooms" in err.value.message


def test_missing_column_in_a_frame_is_refused(schema: InputSchema) -> None:
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(pd.DataFrame({"area": [1.0], "rooms": [1], "city": ["a"]}))
    assert err.value.field == "pool"


@pytest.mark.parametrize("bad", ["many", [1, 2], {"a": 1}, True])
def test_wrong_type_in_numeric_column_names_column_and_row(schema: InputSchema, bad: object) -> None:
    rows = [{"area": 1, "rooms": 2, "city": "a", "pool": "no"}, {"area": 1, "rooms": bad, "city": "a", "pool": "no"}]
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(rows)
    assert (err.value.field, err.value.row) == ("rooms", 1)


def test_null_in_a_column_never_missing_in_training_is_refused(schema: InputSchema) -> None:
    with pytest.raises(SchemaError) as err:
        schema.validate_rows([{"area": 1, "rooms": None, "city": "a", "pool": "no"}])
    assert err.value.field == "rooms"
    out = schema.validate_rows([{"area": None, "rooms": 1, "city": None, "pool": "no"}])
    assert np.isnan(out.loc[0, "area"]) and pd.isna(out.loc[0, "city"])


def test_unseen_category_allowed_by_default_and_refused_when_asked(schema: InputSchema) -> None:
    row = {"area": 1, "rooms": 1, "city": "zz", "pool": "no"}
    assert schema.validate_rows([row]).loc[0, "city"] == "zz"
    strict = schema.model_copy(update={"unseen_categories": "reject"})
    with pytest.raises(SchemaError) as err:
        strict.validate_rows([row])
    assert err.value.field == "city" and "zz" in err.value.message


def test_infinite_and_non_object_rows_are_refused(schema: InputSchema) -> None:
    with pytest.raises(SchemaError):
        schema.validate_rows([{"area": float("inf"), "rooms": 1, "city": "a", "pool": "no"}])
    with pytest.raises(SchemaError) as err:
        schema.validate_rows([[1, 2, 3]])  # type: ignore[list-item]
    assert err.value.row == 0
    with pytest.raises(SchemaError):
        schema.validate_rows([])


def test_schema_round_trips_through_json(schema: InputSchema) -> None:
    assert InputSchema.model_validate_json(schema.model_dump_json()) == schema


@pytest.mark.parametrize("big", [10**400, -(10**400), 2**1024])
def test_an_int_too_large_for_a_float_is_a_schema_error_not_a_crash(schema: InputSchema, big: int) -> None:
    good = {"area": 1, "rooms": 2, "city": "a", "pool": "no"}
    for rows in ([good, {**good, "rooms": big}], pd.DataFrame([good, {**good, "rooms": big}])):
        with pytest.raises(SchemaError) as err:
            schema.validate_rows(rows)
        assert (err.value.field, err.value.row) == ("rooms", 1)
        assert "too large" in err.value.message


GOOD = {"area": 1.0, "rooms": 2, "city": "a", "pool": "no"}


def test_every_bad_row_of_every_column_is_a_problem_with_its_row_field_and_reason(schema: InputSchema) -> None:
    rows = [dict(GOOD) for _ in range(6)]
    rows[1]["rooms"] = "many"
    rows[4]["rooms"] = None
    rows[2]["area"] = float("inf")
    rows[5]["pool"] = ["no"]
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(rows)
    found = [(p.row, p.field, p.reason) for p in err.value.problems]
    assert found == [
        (2, "area", "infinite values are not accepted"),
        (1, "rooms", "'many' is not a number"),
        (4, "rooms", "a value is required (it was never missing in training)"),
        (5, "pool", "expected a category, got list"),
    ]
    assert (err.value.row, err.value.field) == (2, "area")  # the first problem's
    assert err.value.message.startswith("column 'area' row 2: infinite values are not accepted (and 3 more")
    assert err.value.problems_at(4)[0].message == (
        "column 'rooms' row 4: a value is required (it was never missing in training)")


def test_one_value_is_one_problem_even_when_several_checks_would_refuse_it(schema: InputSchema) -> None:
    with pytest.raises(SchemaError) as err:
        schema.validate_rows([{**GOOD, "rooms": [1]}])  # wrong type; not also "missing" nor "not a number"
    assert [(p.row, p.field) for p in err.value.problems] == [(0, "rooms")]
    assert err.value.message == "column 'rooms' row 0: expected a number, got list"


def test_rows_of_the_wrong_shape_are_problems_of_the_row_and_stop_the_value_checks(schema: InputSchema) -> None:
    rows = [{"area": "x", "rooms": 1, "city": "a"}, [1, 2], {**GOOD, "rooms": "bad"}]
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(rows)  # type: ignore[arg-type]
    assert [(p.row, p.field, p.scope) for p in err.value.problems] == [(0, "pool", "row"),
                                                                        (1, "instances", "row")]
    assert err.value.problems[0].message == "row 0 is missing column 'pool'"
    assert err.value.problems[1].message == "row 1 is a list, expected an object of column values"


def test_a_problem_reads_without_its_row_or_renumbered(schema: InputSchema) -> None:
    with pytest.raises(SchemaError) as err:
        schema.validate_rows([GOOD, {**GOOD, "area": "big"}, {"area": 1, "city": "a", "pool": "no"}][:2])
    value = err.value.problems[0]
    assert value.describe("the message") == "column 'area': 'big' is not a number"
    assert value.at_row(1001).message == "column 'area' row 1001: 'big' is not a number"
    with pytest.raises(SchemaError) as err:
        schema.validate_rows([{"area": 1, "city": "a", "pool": "no"}])
    assert err.value.problems[0].describe("the message") == "the message is missing column 'rooms'"


def test_a_frame_missing_columns_names_each_of_them(schema: InputSchema) -> None:
    with pytest.raises(SchemaError) as err:
        schema.validate_rows(pd.DataFrame({"area": [1.0], "rooms": [1]}))
    assert [(p.row, p.field) for p in err.value.problems] == [(None, "city"), (None, "pool")]
    assert err.value.message.startswith("missing column 'city' (and 1 more problem: missing column 'pool')")


def test_an_error_raised_with_a_message_holds_one_problem_with_that_text() -> None:
    err = SchemaError("'instances' must be a list", field="instances")
    assert err.message == "'instances' must be a list"
    assert [(p.row, p.field, p.reason) for p in err.problems] == [(None, "instances", "'instances' must be a list")]


def test_a_schema_error_survives_pickling_with_its_problems(schema: InputSchema) -> None:
    import pickle

    with pytest.raises(SchemaError) as err:
        schema.validate_rows([{**GOOD, "rooms": "x"}, {**GOOD, "area": None, "rooms": "y"}])
    copy = pickle.loads(pickle.dumps(err.value))
    assert copy.problems == err.value.problems and copy.message == err.value.message
