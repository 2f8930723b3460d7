"""Every prediction-log target behind ``LogSink`` (what the shipper writes) and ``LogReader`` (what
``predictions list/show``, ``replay`` and the monitor read): the table on SQLite and on PostgreSQL, and the
Parquet files. The same assertions for all."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete

from modelyard.errors import NotFoundError
from modelyard.predlog import (
    LogReader,
    LogSink,
    PredictionRecord,
    Route,
    find_request,
    read_window,
    recent,
    window_source,
)
from modelyard.predlog.parquet import ParquetLogReader, ParquetSink
from modelyard.predlog.store import SqlLogReader, SqlSink
from modelyard.registry import tables
from modelyard.registry.db import get_engine

TARGETS = ["sql-sqlite", pytest.param("sql-postgres", marks=pytest.mark.postgres), "parquet"]
T0 = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)  # two hours before midnight: records span two days


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[LogSink, LogReader]:
    if request.param == "parquet":
        root = tmp_path / "predictions"
        return ParquetSink(root, sync=False), ParquetLogReader(root)
    if request.param == "sql-sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = request.getfixturevalue("pg_session_url")
    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(delete(tables.predictions))
    return SqlSink(url, engine=engine), SqlLogReader(engine)


def _rec(rid: str, minutes: float = 0, *, model: str = "m", version: int = 1, route: str = Route.PRIMARY,
         **extra: Any) -> PredictionRecord:
    fields: dict[str, Any] = {"inputs": [{"x": 1.5, "name": "a", "missing": None}], "outputs": [2.5],
                              "n_rows": 1, "latency_ms": 3.25, **extra}
    return PredictionRecord(request_id=rid, model=model, version=version, route=route,
                            ts=T0 + timedelta(minutes=minutes), **fields)


def _ship(sink: LogSink, segment_id: str, records: list[PredictionRecord]) -> None:
    size = sink.batch_size or len(records)
    for start in range(0, len(records), size):
        sink.write(segment_id, records[start:start + size])


def test_both_protocols_are_implemented(target: tuple[LogSink, LogReader]) -> None:
    sink, reader = target
    assert isinstance(sink, LogSink) and isinstance(reader, LogReader)


def test_a_record_comes_back_as_it_was_written(target: tuple[LogSink, LogReader]) -> None:
    sink, reader = target
    full = _rec("r1", 7.000123, version=3, meta={"probabilities": [[0.2, 0.8]], "routing_key": "k"},
                outputs=[{"prediction": 1, "probability": 0.8}])
    failed = _rec("r2", 8, error="SchemaError: bad", outputs=None, latency_ms=None)
    _ship(sink, "wal-1-1-a", [full, failed])
    (got,) = reader.by_request("r1")
    assert got == full and got.ts.tzinfo is not None and got.ts.utcoffset() == timedelta(0)
    assert reader.by_request("r2") == [failed] and reader.by_request("nobody") == []


def test_select_filters_orders_newest_first_and_limits(target: tuple[LogSink, LogReader]) -> None:
    sink, reader = target
    records = [_rec(f"p{i}", i * 30) for i in range(8)]  # 22:00 .. 01:30 the next day
    records += [_rec("c1", 45, route=Route.CANARY, version=2), _rec("s1", 46, route=Route.SHADOW, version=2),
                _rec("o1", 50, model="other")]
    records.sort(key=lambda r: r.ts)  # written in time order: the table's "newest" is the last inserted
    _ship(sink, "wal-1-1-a", records[:5])
    _ship(sink, "wal-1-2-b", records[5:])

    assert [r.request_id for r in reader.select("m", limit=3)] == ["p7", "p6", "p5"]
    window = reader.select("m", since=T0 + timedelta(minutes=60), until=T0 + timedelta(minutes=150), limit=None)
    assert [r.request_id for r in window] == ["p4", "p3", "p2"]  # since inclusive, until exclusive
    assert [r.request_id for r in reader.select("m", route=Route.CANARY)] == ["c1"]
    assert {r.request_id for r in reader.select("m", version=2, limit=None)} == {"c1", "s1"}
    assert [r.request_id for r in reader.select("other")] == ["o1"]
    assert len(reader.select(None, limit=None)) == 11 and reader.select("nobody") == []


def test_writes_are_idempotent_on_request_id_and_route(target: tuple[LogSink, LogReader]) -> None:
    sink, reader = target
    batch = [_rec("a", 1), _rec("a", 1, route=Route.SHADOW, version=2), _rec("b", 2), _rec("b", 2)]
    _ship(sink, "wal-1-1-a", batch)
    _ship(sink, "wal-1-1-a", batch)  # the same segment shipped again (a shipper killed before deleting it)
    _ship(sink, "wal-2-1-b", [_rec("a", 1)])  # the same request in another segment (a redelivered message)
    assert sorted((r.request_id, r.route) for r in reader.select("m", limit=None)) == [
        ("a", "primary"), ("a", "shadow"), ("b", "primary")]
    assert [r.route for r in find_request(reader, "a")] == ["primary", "shadow"]


def test_the_window_api_and_the_queries_read_any_target(target: tuple[LogSink, LogReader]) -> None:
    sink, reader = target
    _ship(sink, f"wal-{uuid.uuid4().hex[:6]}", [
        _rec("q1", 1), _rec("q1", 1, route=Route.SHADOW, version=2), _rec("q2", 2, route=Route.CANARY, version=2),
        _rec("q2", 2, route=Route.MIRROR), _rec("q3", 3, error="boom", outputs=None)])
    window = read_window(reader, "m", since=T0, until=T0 + timedelta(hours=1), routes=(Route.CANARY, Route.MIRROR))
    assert {r.request_id for r in window.on(Route.CANARY)} == {"q2"} and window.versions() == {1, 2}
    assert [r.request_id for r in recent(reader, "m", limit=2)] == ["q3", "q2"]
    assert len(window_source(reader)("m", T0, T0 + timedelta(minutes=2))) == 2  # q1's primary and shadow
    with pytest.raises(NotFoundError):
        find_request(reader, "nobody")
