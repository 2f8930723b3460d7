"""The prediction log's prepared insert (``PreparedInsert``) binds every column as SQLAlchemy Core would:
its quicker processors (JSON, SQLite's datetime text) give the very values SQLAlchemy's own give."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import create_engine

from modelyard.registry.db import _json_dumps, log_engine
from modelyard.registry.predictions import PreparedInsert, _quick
from modelyard.registry.tables import predictions

VALUES = [
    None, 0, 1.5, math.nan, "text", "", [1, 2.5, None], [{"a": 1, "b": "x", "c": None}], {"k": [1, {"n": 2}]},
    np.float64(2.5), np.int64(3), np.arange(3), {"probabilities": [[0.1, 0.9]], "classes": ["a", "b"]},
    datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC), datetime(2026, 12, 8, 1, 2, 3, tzinfo=UTC),
    datetime(2026, 12, 8, 1, 2, 3), datetime(5, 1, 2, 3, 4, 5, 6),
    datetime(2026, 12, 8, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))), date(2026, 12, 8),
]


def _plain(value: object) -> object:
    """psycopg's ``Json`` wrapper as what it wraps (it does not compare by value)."""
    return ("Json", value.obj) if type(value).__name__ == "Json" else value  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgresql"])
def dialect(request: pytest.FixtureRequest, tmp_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return log_engine(f"sqlite:///{tmp_path / 'log.db'}").dialect
    return create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", json_serializer=_json_dumps).dialect


def test_every_column_is_bound_as_sqlalchemy_binds_it(dialect) -> None:  # type: ignore[no-untyped-def]
    prepared = PreparedInsert(dialect)
    quicker = 0
    for name, process in zip(prepared.order, prepared.processors, strict=True):
        kind = dialect.type_descriptor(predictions.c[name].type)
        original = kind.bind_processor(dialect)
        assert (process is None) == (original is None), name
        if process is None:
            continue
        quicker += process is dialect._json_serializer or process.__name__ == "isoformat_datetime"
        for value in VALUES:
            try:
                expected = original(value)
            except Exception as exc:  # a value this column's own processor refuses: refused alike
                with pytest.raises(type(exc)):
                    process(value)
                continue
            got, expected = _plain(process(value)), _plain(expected)
            assert got == expected or (got != got and expected != expected), (name, value)
    # SQLite: inputs, outputs, meta and ts; psycopg binds JSON as its own Json objects, kept as they are
    assert quicker == (4 if dialect.name == "sqlite" else 0)


def test_a_column_without_a_serializer_keeps_sqlalchemy_s_processor() -> None:
    dialect = create_engine("sqlite://").dialect  # no json_serializer: SQLAlchemy's json.dumps
    kind = dialect.type_descriptor(predictions.c["meta"].type)
    process = kind.bind_processor(dialect)
    assert _quick(dialect, kind, process) is process
