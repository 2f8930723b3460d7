"""The prediction log's table, ``modelyard_predictions``: writes idempotent on (request_id, route), reads by
request id, by model and time window, and the scalar traffic columns the dashboard draws.

Rows go in and come out as plain mappings (the columns of the table); ``predlog`` turns them into its
``PredictionRecord`` objects. A batch replayed from a spill file after an outage, or a redelivered stream
message, never produces a second row.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Protocol, runtime_checkable

import orjson
from sqlalchemy import JSON, DateTime, Dialect, Engine, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from modelyard.registry.lease import as_utc
from modelyard.registry.tables import predictions

PredictionRow = dict[str, Any]


@dataclass(frozen=True)
class TrafficRow:
    """One logged call without its rows: enough for request rates, error rates and latency."""

    ts: datetime
    version: int
    route: str
    latency_ms: float | None
    failed: bool


@runtime_checkable
class PredictionStore(Protocol):
    def insert(self, rows: Sequence[Mapping[str, Any]]) -> int: ...

    def by_request(self, request_id: str) -> list[PredictionRow]: ...

    def select(self, model: str | None = None, *, since: datetime | None = None, until: datetime | None = None,
               route: str | None = None, version: int | None = None,
               limit: int | None = 100) -> list[PredictionRow]: ...

    def traffic(self, model: str, since: datetime, until: datetime) -> list[TrafficRow]: ...

    def answers(self, request_ids: Sequence[str]) -> list[PredictionRow]: ...


def _row(mapping: Mapping[Any, Any]) -> PredictionRow:
    row = dict(mapping)
    row.pop("id", None)
    if row.get("ts") is not None:
        row["ts"] = as_utc(row["ts"])  # SQLite hands back naive datetimes
    row["n_rows"] = int(row.get("n_rows") or 0)
    row["version"] = int(row["version"])
    return row


def _insert_ignoring(dialect: str) -> Any:
    """``INSERT`` into the table that skips a row whose (request_id, route) is stored already."""
    if dialect == "postgresql":
        return pg_insert(predictions).on_conflict_do_nothing(constraint="uq_prediction_request_route")
    if dialect == "sqlite":
        return sqlite_insert(predictions).on_conflict_do_nothing()
    return predictions.insert().prefix_with("IGNORE")


INSERT_COLUMNS = tuple(c.name for c in predictions.columns if c.name != "id")
"""The columns a logged record fills (all but the key)."""
_INSERT_SET = frozenset(INSERT_COLUMNS)


class PreparedInsert:
    """``_insert_ignoring`` compiled once for a dialect, with each column's bind processor (the JSON
    serializer, SQLite's datetime text, ...): ``params`` turns rows into what the driver's ``executemany``
    takes, as SQLAlchemy Core would, without its per-row parameter assembly (half the cost of shipping a
    record into SQLite)."""

    def __init__(self, dialect: Dialect) -> None:
        compiled = _insert_ignoring(dialect.name).compile(dialect=dialect, column_keys=list(INSERT_COLUMNS),
                                                          for_executemany=True)
        self.sql = compiled.string
        self.positional = bool(compiled.positional)
        order = list(compiled.positiontup or []) if self.positional else list(INSERT_COLUMNS)
        if sorted(order) != sorted(INSERT_COLUMNS):
            raise RuntimeError(f"unexpected parameters of the prepared insert: {order}")
        self.order = tuple(order)
        column = predictions.c
        self.processors = tuple(_quick(dialect, column[name].type, dialect.type_descriptor(column[name].type)
                                       .bind_processor(dialect))
                                for name in self.order)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        return self._assemble([[r[name] for r in rows] for name in self.order])

    def params_of(self, items: Sequence[Any]) -> list[Any]:
        """``params`` of objects that hold every column as an attribute (``PredictionRecord``): read
        straight from them, without a row dict each (a third of a shipped record's Python time)."""
        return self._assemble([list(map(attrgetter(name), items)) for name in self.order])

    def _assemble(self, values: list[list[Any]]) -> list[Any]:
        columns = []  # column by column: each processor mapped over its column at once
        for column, process in zip(values, self.processors, strict=True):
            columns.append(column if process is None else list(map(process, column)))
        if self.positional:
            return list(zip(*columns, strict=True))
        return [dict(zip(self.order, values, strict=True)) for values in zip(*columns, strict=True)]


def _sqlite_datetime(value: Any) -> Any:
    """SQLite's ``DATETIME`` text, ``YYYY-MM-DD HH:MM:SS.ffffff`` of the wall-clock fields whatever the zone,
    in one ``isoformat`` call (SQLAlchemy formats a dict of the fields)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


_PROBES: dict[type, list[Any]] = {  # values a quicker processor must bind exactly as SQLAlchemy's does
    JSON: [None, [{"a": 1.5, "b": None}], "text"],
    DateTime: [datetime(2026, 12, 8, 1, 2, 3, 456789, tzinfo=UTC), datetime(2026, 12, 8, 1, 2, 3),
               datetime(5, 1, 2, 3, 4, 5)],
}


def _quick(dialect: Dialect, kind: Any, process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """A column's bind processor, or a quicker one when it binds the probe values exactly as SQLAlchemy's does
    (the JSON wrappers and SQLite's datetime text were a third of a shipped record's parameter time):

    - a JSON column's: the engine's serializer itself. SQLAlchemy's wrapper only tells its ``JSON.NULL`` and
      ``null()`` markers apart, which no record holds; psycopg's wraps the text in its own ``Json``: kept;
    - a datetime column's: ``_sqlite_datetime`` (SQLite's text); any other type (a ``date``) goes to
      SQLAlchemy's.
    """
    if process is None or not isinstance(kind, (JSON, DateTime)):
        return process
    quick: Callable[[Any], Any] | None
    if isinstance(kind, JSON):
        quick = None if kind.none_as_null else getattr(dialect, "_json_serializer", None)
        probes = _PROBES[JSON]
    else:
        def isoformat_datetime(value: Any) -> Any:
            return _sqlite_datetime(value) if type(value) is datetime else process(value)
        quick, probes = isoformat_datetime, _PROBES[DateTime]
    return quick if quick is not None and all(quick(v) == process(v) for v in probes) else process


_PREPARED: weakref.WeakKeyDictionary[Dialect, PreparedInsert] = weakref.WeakKeyDictionary()


def _prepared(engine: Engine) -> PreparedInsert:
    prepared = _PREPARED.get(engine.dialect)
    if prepared is None:
        prepared = _PREPARED[engine.dialect] = PreparedInsert(engine.dialect)
    return prepared


class SqlPredictionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert rows, skipping any (request_id, route) already stored; return how many were sent. Rows
        with every column of ``INSERT_COLUMNS`` (what ``PredictionRecord.to_row`` gives) take the prepared
        statement (``PreparedInsert``); others go through SQLAlchemy Core, which fills in the defaults."""
        if not rows:
            return 0
        if all(r.keys() == _INSERT_SET for r in rows):
            return self._insert_prepared(lambda prepared: prepared.params(rows))
        with self.engine.begin() as conn:
            conn.execute(_insert_ignoring(self.engine.dialect.name), [dict(r) for r in rows])
        return len(rows)

    def insert_items(self, items: Sequence[Any]) -> int:
        """``insert`` of objects holding every column of ``INSERT_COLUMNS`` as an attribute (the log's
        records), through the prepared statement."""
        if not items:
            return 0
        return self._insert_prepared(lambda prepared: prepared.params_of(items))

    def _insert_prepared(self, params: Callable[[PreparedInsert], list[Any]]) -> int:
        prepared = _prepared(self.engine)
        values = params(prepared)
        with self.engine.begin() as conn:
            conn.exec_driver_sql(prepared.sql, values)
        return len(values)

    def by_request(self, request_id: str) -> list[PredictionRow]:
        """Every row of one request (the primary and, if any, its shadow and canary), in insertion order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(predictions).where(predictions.c.request_id == request_id).order_by(predictions.c.id)
            ).mappings()
            return [_row(r) for r in rows]

    def select(self, model: str | None = None, *, since: datetime | None = None, until: datetime | None = None,
               route: str | None = None, version: int | None = None,
               limit: int | None = 100) -> list[PredictionRow]:
        """Rows newest first, ``since <= ts < until``: one model's by time (then insertion), as the Parquet
        target orders them, so that the ``(model, ts)`` index hands them over in order; every model's by
        insertion. Ordered by insertion, a model's window was sorted whole before the limit applied: 3.1 s
        for 1.8M records in the monitor's hour, every minute, in the serving process (issue 17)."""
        c = predictions.c
        if model is not None:
            query = select(predictions).where(c.model == model).order_by(c.ts.desc(), c.id.desc())
        else:
            query = select(predictions).order_by(c.id.desc())
        if since is not None:
            query = query.where(c.ts >= as_utc(since))
        if until is not None:
            query = query.where(c.ts < as_utc(until))
        if route is not None:
            query = query.where(c.route == route)
        if version is not None:
            query = query.where(c.version == version)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def traffic(self, model: str, since: datetime, until: datetime) -> list[TrafficRow]:
        """The scalar columns of one model's calls with ``since <= ts < until`` (never the logged rows)."""
        p = predictions.c
        query = select(p.ts, p.version, p.route, p.latency_ms, p.error).where(
            p.model == model, p.ts >= as_utc(since), p.ts < as_utc(until)
        ).order_by(p.ts, p.id)  # the (model, ts) index's order: no sort of the window
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [TrafficRow(as_utc(r[0]), int(r[1]), str(r[2]), None if r[3] is None else float(r[3]), bool(r[4]))
                for r in rows]

    def answers(self, request_ids: Sequence[str]) -> list[PredictionRow]:
        """The records of these request ids without their inputs (request_id, route, model, version, ts,
        outputs, meta, error): what outcomes are joined to."""
        ids = sorted(set(request_ids))
        if self.engine.dialect.name == "postgresql":
            return self._answers_pg(ids)
        p = predictions.c
        cols = (p.request_id, p.route, p.model, p.version, p.ts, p.outputs, p.meta, p.error)
        out: list[PredictionRow] = []
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 900):
                query = select(*cols).where(p.request_id.in_(ids[i:i + 900]))
                out.extend(_row(r) for r in conn.execute(query).mappings())
        return out

    def _answers_pg(self, ids: list[str]) -> list[PredictionRow]:
        """PostgreSQL: one ``= ANY(array)`` per 50,000 ids, the JSON columns as text decoded by orjson (the
        driver's row-by-row JSON decoding was most of the cost of joining outcomes)."""
        out: list[PredictionRow] = []
        sql = ("SELECT request_id, route, model, version, ts, outputs::text, meta::text, error "
               "FROM modelyard_predictions WHERE request_id = ANY(%s)")
        with self.engine.connect() as conn:
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                for i in range(0, len(ids), 50_000):
                    cur.execute(sql, (ids[i:i + 50_000],))
                    for rid, route, model, version, ts, outputs, meta, error in cur.fetchall():
                        out.append({"request_id": rid, "route": route, "model": model, "version": int(version),
                                    "ts": as_utc(ts), "outputs": None if outputs is None else orjson.loads(outputs),
                                    "meta": None if meta is None else orjson.loads(meta), "error": error})
            finally:
                cur.close()
        return out
