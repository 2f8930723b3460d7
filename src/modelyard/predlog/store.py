"""The log store's two seams: ``LogReader`` (what every reader of the log asks) and ``LogSink`` (where the
shipper puts segments), with their SQL implementations (the SQL itself is in ``registry.predictions``).

Two targets stand behind them (``MODELYARD_LOG_TARGET``, see ``target.py``): the registry's table
(``SqlLogReader``, ``SqlSink``) and Parquet files (``parquet.py``). Every function here that reads takes a
``LogSource``: a ``LogReader``, or an ``Engine`` (read as the SQL target), so callers that hold an engine
keep working unchanged.

Writes are idempotent on (request_id, route): a batch replayed from a segment after a crash, or a
redelivered stream message, never produces a second record.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from modelyard.predlog.records import PredictionRecord
from modelyard.registry.db import Engine, is_content_error, log_engine, migrate
from modelyard.registry.predictions import SqlPredictionStore

__all__ = ["LogReader", "LogSink", "LogSource", "SqlLogReader", "SqlSink", "TargetUnavailable", "as_reader",
           "get_records", "insert_records", "list_records"]


@runtime_checkable
class LogReader(Protocol):
    """The prediction log as its readers see it, whatever holds it. One record per (request id, route)."""

    def by_request(self, request_id: str) -> list[PredictionRecord]:
        """Every record of one request (the primary and, if any, its shadow, canary, mirror)."""
        ...

    def select(self, model: str | None = None, *, since: datetime | None = None, until: datetime | None = None,
               route: str | None = None, version: int | None = None,
               limit: int | None = 100) -> list[PredictionRecord]:
        """Records newest first with ``since <= ts < until``, filtered by route and version (the table
        orders by insertion, Parquet by time: the same order but for records shipped late)."""
        ...


LogSource = LogReader | Engine
"""What a reading function takes: a ``LogReader``, or an engine (the SQL target)."""


@runtime_checkable
class LogSink(Protocol):
    """Where the shipper puts the records of a segment. ``write`` raises on any failure; the shipper keeps
    the segment and retries, unless ``is_content_error`` says the records themselves were refused."""

    batch_size: int | None
    """Records per ``write``; None: a whole segment in one ``write`` (its id names what is written)."""
    name: str
    """What the log lines call it: "database", "Parquet store"."""

    def write(self, segment_id: str, records: Sequence[PredictionRecord]) -> None:
        """Store ``records`` (of the segment ``segment_id``); writing the same again adds nothing."""
        ...

    def is_content_error(self, exc: BaseException) -> bool: ...

    def maintain(self) -> None:
        """Housekeeping after a ship (retention); cheap when there is nothing to do."""
        ...

    def dispose(self) -> None: ...


class TargetUnavailable(Exception):
    """The log store cannot be reached or prepared (never the records' fault)."""


def _record(row: dict[str, Any]) -> PredictionRecord:
    return PredictionRecord(**row)


class SqlLogReader:
    """The log in the registry's ``modelyard_predictions`` table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._store = SqlPredictionStore(engine)

    def by_request(self, request_id: str) -> list[PredictionRecord]:
        return [_record(r) for r in self._store.by_request(request_id)]

    def select(self, model: str | None = None, *, since: datetime | None = None, until: datetime | None = None,
               route: str | None = None, version: int | None = None,
               limit: int | None = 100) -> list[PredictionRecord]:
        rows = self._store.select(model, since=since, until=until, route=route, version=version, limit=limit)
        return [_record(r) for r in rows]


class SqlSink:
    """Ships into the table at ``url``, in batches, through ``insert_records`` (idempotent)."""

    def __init__(self, url: str, *, batch_size: int = 500, engine: Engine | None = None,
                 power_safe: bool = True) -> None:
        self.url = url
        self.power_safe = power_safe  # SQLite: commits on disk before a segment is let go (``log_engine``)
        self.batch_size: int | None = max(1, batch_size)
        self.name = "database"
        self._engine = engine
        self._migrated = False

    def _get_engine(self) -> Engine:
        try:  # connecting and migrating: any failure here is the database's, never the records'
            if self._engine is None:
                self._engine = log_engine(self.url, power_safe=self.power_safe)
            if not self._migrated:
                migrate(self._engine)
                self._migrated = True
        except Exception as exc:  # (two processes migrating at once raise IntegrityError: not poison)
            raise TargetUnavailable(str(exc) or type(exc).__name__) from exc
        return self._engine

    def write(self, segment_id: str, records: Sequence[PredictionRecord]) -> None:
        insert_records(self._get_engine(), records)

    def is_content_error(self, exc: BaseException) -> bool:
        return not isinstance(exc, TargetUnavailable) and is_content_error(exc)

    def maintain(self) -> None:
        return None  # retention of the table is the database's (partitioning, a scheduled DELETE)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def as_reader(source: LogSource) -> LogReader:
    """``source`` as a ``LogReader`` (an engine reads the SQL target)."""
    return SqlLogReader(source) if isinstance(source, Engine) else source


def insert_records(engine: Engine, records: Sequence[PredictionRecord]) -> int:
    """Insert records, skipping any (request_id, route) already stored; return how many were sent."""
    return SqlPredictionStore(engine).insert_items(records)


def get_records(source: LogSource, request_id: str) -> list[PredictionRecord]:
    """Every record of one request (the primary and, if any, its shadow and canary)."""
    return as_reader(source).by_request(request_id)


def list_records(
    source: LogSource,
    model: str | None = None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    route: str | None = None,
    version: int | None = None,
    limit: int | None = 100,
) -> list[PredictionRecord]:
    """Records newest first, ``since <= ts < until``."""
    return as_reader(source).select(model, since=since, until=until, route=route, version=version, limit=limit)
