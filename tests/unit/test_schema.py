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
