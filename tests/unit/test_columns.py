"""Column validation (no DataFrame) gives exactly the values and the errors of ``schema.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelyard.errors import SchemaError
from modelyard.runtime.columns import Columns, validate_columns
from modelyard.schema import InputSchema


def make_schema(unseen: str = "allow") -> InputSchema:
    frame = pd.DataFrame({
        "area": [50.0, 80.5, np.nan, 120.0],
        "rooms": [1, 2, 3, 4],
        "city": ["a", "b", "a", None],
        "pool": ["yes", "no", "no", "yes"],
    })
    return InputSchema.infer(frame, categorical=["city", "pool"], unseen_categories=unseen)  # type: ignore[arg-type]


def outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except SchemaError as exc:
        return "error", (exc.message, exc.field, exc.row)
    except Exception as exc:  # any crash of schema.py would have to be kept alike too
        return "crash", (type(exc).__name__, str(exc))


def assert_same(schema: InputSchema, rows: Any) -> None:
    expected = outcome(lambda: schema.validate_rows(rows))
    got = outcome(lambda: validate_columns(schema, rows).to_frame())
    assert got[0] == expected[0], (got, expected)
    if expected[0] == "ok":
        pd.testing.assert_frame_equal(got[1], expected[1])
    else:
        assert got[1] == expected[1]


GOOD = {"area": 10.5, "rooms": 3, "city": "b", "pool": "no"}

CASES = [
    GOOD,
    [GOOD, {**GOOD, "area": None, "city": None}],
    [{**GOOD, "extra": "ignored"}],
    [{**GOOD, "rooms": "3"}],  # a number given as a string: the schema coerces it
    [{**GOOD, "rooms": True}],
    [{**GOOD, "rooms": "many"}],
    [{**GOOD, "rooms": None}],  # never missing in training
    [{**GOOD, "area": float("inf")}],
    [{**GOOD, "area": float("nan")}],
    [{**GOOD, "city": 7}],  # a number in a categorical column becomes "7"
    [{**GOOD, "city": [1]}],
    [{**GOOD, "pool": None}],
    [{**GOOD, "city": "unseen"}],
    [GOOD, {k: v for k, v in GOOD.items() if k != "rooms"}],
    [GOOD, ["not", "a", "dict"]],
    [],
    [{**GOOD, "rooms": 10**400}],
    [{**GOOD, "rooms": np.float64(2.5)}],
]


@pytest.mark.parametrize("rows", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("unseen", ["allow", "reject"])
def test_same_values_and_same_errors_as_the_schema(rows: Any, unseen: str) -> None:
    assert_same(make_schema(unseen), rows)


FRAME = pd.DataFrame({"area": [10.5, np.nan, 3.0], "rooms": [1, 2, 3], "city": ["a", None, "b"],
                      "pool": ["no", "yes", "no"]}, index=[7, 3, 5])

FRAMES = [
    FRAME,
    FRAME.astype({"city": object, "pool": object}),
    FRAME.astype({"city": "string", "pool": "string"}),  # pd.NA for missing
    FRAME.astype({"rooms": "Int64"}),
    FRAME.assign(rooms=[True, False, True]),
    FRAME.assign(area=[1.0, np.inf, 2.0]),
    FRAME.assign(rooms=[1.0, np.nan, 2.0]),
    FRAME.assign(pool=["no", None, "yes"]),
    FRAME.assign(city=["a", "zz", None]),
    FRAME.assign(city=[1, 2, 3]),
    FRAME.assign(rooms=["1", "2", "x"]),
    FRAME.drop(columns="pool"),
    FRAME.iloc[:0],
    pd.concat([FRAME, FRAME[["city"]]], axis=1),  # a duplicated column
]


@pytest.mark.parametrize("frame", FRAMES, ids=[str(i) for i in range(len(FRAMES))])
@pytest.mark.parametrize("unseen", ["allow", "reject"])
def test_frames_give_the_same_values_and_errors_as_the_schema(frame: pd.DataFrame, unseen: str) -> None:
    assert_same(make_schema(unseen), frame)


def test_clean_rows_are_parsed_without_pandas_into_float_and_object_arrays() -> None:
    cols = validate_columns(make_schema(), [GOOD, {**GOOD, "city": None}])
    assert cols.data["area"].dtype == np.float64 and cols.data["city"].dtype == object
    assert cols.data["city"][0] == "b" and np.isnan(cols.data["city"][1])


@pytest.mark.parametrize("rows", [[GOOD, {**GOOD, "rooms": 10**400}],
                                  pd.DataFrame([GOOD, {**GOOD, "area": -(10**309)}])])
def test_an_int_too_large_for_a_float_is_a_schema_error(rows: Any) -> None:
    with pytest.raises(SchemaError) as err:  # was an OverflowError: a 500 for a caller's mistake
        validate_columns(make_schema(), rows)
    assert err.value.row == 1 and "too large" in err.value.message


def test_slice_and_concat_keep_rows_in_order() -> None:
    schema = make_schema()
    cols = validate_columns(schema, [{**GOOD, "area": float(i)} for i in range(10)])
    joined = Columns.concat([cols.slice(0, 3), cols.slice(3, 10)])
    assert len(joined) == 10
    assert joined.data["area"].tolist() == [float(i) for i in range(10)]


def _same_columns(got: Columns, expected: Columns) -> None:
    assert list(got.data) == list(expected.data) and len(got) == len(expected)
    for name, array in expected.data.items():
        assert got.data[name].dtype == array.dtype, name
        assert [(type(v), v if v == v else "NaN") for v in got.data[name].tolist()] == [
            (type(v), v if v == v else "NaN") for v in array.tolist()], name


@pytest.mark.parametrize("unseen", ["allow", "reject"])
def test_one_row_requests_batched_give_the_arrays_of_their_rows_validated_together(unseen: str) -> None:
    """A one-row request keeps scalars (``Columns.one_row``); joined with others, each column is built
    once: the same arrays as validating all the rows at once, and as joining each row's own arrays."""
    schema = make_schema(unseen)
    rows = [GOOD, {**GOOD, "area": None, "city": None}, {**GOOD, "rooms": 7, "area": float("nan")},
            {**GOOD, "pool": "yes", "area": -0.0}]
    singles = [validate_columns(schema, [row]) for row in rows]
    _same_columns(Columns.concat(singles), validate_columns(schema, rows))
    arrays = [Columns(dict(validate_columns(schema, [row]).data), 1) for row in rows]  # built one by one
    _same_columns(Columns.concat(arrays), validate_columns(schema, rows))
    mixed = [singles[0], validate_columns(schema, rows[1:3]), singles[3]]  # one-row and many-row parts
    _same_columns(Columns.concat(mixed), validate_columns(schema, rows))
    _same_columns(singles[2], validate_columns(schema, [rows[2], rows[2]]).slice(0, 1))  # one alone


values = st.one_of(st.none(), st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["a", "b", "zz", "", "3", "yes"]), st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.fixed_dictionaries({"area": values, "rooms": values, "city": values, "pool": values}),
                     min_size=1, max_size=4),
       unseen=st.sampled_from(["allow", "reject"]))
def test_any_mix_of_values_validates_like_the_schema(rows: list[dict[str, Any]], unseen: str) -> None:
    assert_same(make_schema(unseen), rows)
    assert_same(make_schema(unseen), pd.DataFrame(rows))


def test_the_sklearn_path_predicts_the_callers_frame_as_validation_would() -> None:
    from sklearn.linear_model import LinearRegression

    from modelyard.runtime.columns import frame_as_is

    frame = pd.DataFrame({"x": [1, 2, 3, 4], "f": [0.5, np.nan, 1.5, 2.0],
                          "c": pd.array(["a", None, "b", "a"], dtype="str")}, index=[7, 8, 9, 10])
    schema = InputSchema.infer(frame, categorical=["c"])
    as_is = frame_as_is(schema, frame)
    assert as_is is not None and list(as_is.columns) == schema.names and list(as_is.index) == [0, 1, 2, 3]
    assert frame_as_is(schema, frame.assign(x=["1", "2", "3", "4"])) is None  # schema.py must parse these
    assert frame_as_is(schema, frame.assign(f=[1.0, np.inf, 2.0, 3.0])) is None
    ref = schema.validate_rows(frame)
    np.testing.assert_array_equal(as_is["x"].astype("float64"), ref["x"])
    assert as_is["c"].isna().tolist() == ref["c"].isna().tolist()
    assert as_is["c"].dropna().tolist() == ref["c"].dropna().tolist()
    fit = LinearRegression().fit(ref[["x", "f"]].fillna(0), [1, 2, 3, 4])
    np.testing.assert_array_equal(fit.predict(as_is[["x", "f"]].fillna(0)), fit.predict(ref[["x", "f"]].fillna(0)))
