"""Which log store the settings name (``MODELYARD_LOG_TARGET``): its sink for the shipper, its reader for
everyone who reads the log (``predictions list/show``, ``replay``, ``explain``, the monitor, the watcher)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from modelyard.config import Settings
from modelyard.durations import parse_duration
from modelyard.predlog.parquet import ParquetLogReader, ParquetSink
from modelyard.predlog.store import LogReader, LogSink, SqlLogReader, SqlSink
from modelyard.registry.db import Engine, get_engine

__all__ = ["LogTarget", "log_reader", "log_retention", "log_sink"]


class LogTarget(StrEnum):
    SQL = "sql"
    """The registry database's ``modelyard_predictions`` table (SQLite or PostgreSQL)."""
    PARQUET = "parquet"
    """Parquet files partitioned by model and day (``parquet.py``), read with DuckDB."""


def log_retention(settings: Settings) -> timedelta | None:
    """``MODELYARD_LOG_RETENTION`` in the one duration grammar (None: keep everything)."""
    if not settings.log_retention:
        return None
    return parse_duration(settings.log_retention, what="MODELYARD_LOG_RETENTION")


def log_sink(settings: Settings, *, engine: Engine | None = None) -> LogSink:
    """Where the shipper puts the segments."""
    if LogTarget(settings.log_target) is LogTarget.PARQUET:
        return ParquetSink(settings.resolved_log_parquet_root, retention=log_retention(settings))
    return SqlSink(settings.resolved_database_url, batch_size=settings.log_batch_size, engine=engine,
                   power_safe=settings.log_durability == "machine")


def log_reader(settings: Settings, engine: Engine | None = None) -> LogReader:
    """The log as its readers see it; ``engine`` is the registry's (the SQL target reads through it)."""
    if LogTarget(settings.log_target) is LogTarget.PARQUET:
        return ParquetLogReader(settings.resolved_log_parquet_root)
    return SqlLogReader(engine or get_engine(settings.resolved_database_url))
