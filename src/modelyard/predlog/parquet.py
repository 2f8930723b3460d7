"""The prediction log as Parquet files, for a log a database should not hold (``MODELYARD_LOG_TARGET=parquet``).

Layout, hive-style, under the log root (``<artifact root>/predictions`` unless ``MODELYARD_LOG_PARQUET_ROOT``)::

    model=<name>/date=YYYY-MM-DD/part-<segment id>.parquet

one part file per write-ahead segment and partition (the model's name percent-encoded; the day in UTC).
Columns: ``request_id, model, version, route, inputs, outputs, n_rows, latency_ms, error, meta, ts`` with
``inputs``, ``outputs`` and ``meta`` as JSON text and ``ts`` a UTC timestamp, so any engine reads them, e.g.
``duckdb -c "SELECT * FROM read_parquet('predictions/**/*.parquet', hive_partitioning=true)"``.

Writes are idempotent: a part file is written under a temporary name, fsync'd, and renamed onto the name of
its segment, so a segment shipped again (the shipper killed mid-way, a second process draining the same
folder) replaces its files with the same rows instead of adding them. Within a segment a (request id, route)
is kept once; readers keep one record per (request id, route) across files too (the earliest), as the
table does.

Retention (``MODELYARD_LOG_RETENTION``, a duration such as ``30d``) deletes whole days: a partition goes once
its day ended more than the retention ago, by the shipper (at most every ``prune_interval`` seconds) or
``modelyard log prune``. Reads go through DuckDB (the ``parquet`` extra), pruned to the partitions of the
model and days asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from modelyard.errors import ConfigError
from modelyard.predlog.records import PredictionRecord

__all__ = ["SCHEMA", "ParquetLogReader", "ParquetSink", "partitions", "prune"]

log = logging.getLogger("modelyard.predlog")

SCHEMA = pa.schema([
    ("request_id", pa.string()), ("model", pa.string()), ("version", pa.int64()), ("route", pa.string()),
    ("inputs", pa.string()), ("outputs", pa.string()), ("n_rows", pa.int64()), ("latency_ms", pa.float64()),
    ("error", pa.string()), ("meta", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
])
_COLUMNS = SCHEMA.names
_JSON_COLUMNS = ("inputs", "outputs", "meta")


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str).decode()


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def model_dir(root: Path, model: str) -> Path:
    return root / f"model={quote(model, safe='')}"


def _day_of(folder: Path) -> date | None:
    try:
        return date.fromisoformat(folder.name.removeprefix("date="))
    except ValueError:
        return None


def partitions(root: Path, model: str | None = None) -> list[tuple[Path, date]]:
    """Every ``model=.../date=...`` folder under ``root`` (of ``model`` when given), with its day."""
    models = [model_dir(root, model)] if model is not None else sorted(root.glob("model=*"))
    found = []
    for folder in models:
        for day_dir in sorted(folder.glob("date=*")):
            day = _day_of(day_dir)
            if day is not None and day_dir.is_dir():
                found.append((day_dir, day))
    return found


def prune(root: Path, retention: timedelta, *, now: datetime | None = None) -> list[Path]:
    """Delete the partitions whose whole day ended more than ``retention`` before ``now``; the deleted."""
    cutoff = _utc(now or datetime.now(UTC)) - retention
    removed = []
    for day_dir, day in partitions(root):
        day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        if day_end <= cutoff:
            shutil.rmtree(day_dir, ignore_errors=True)
            removed.append(day_dir)
    for folder in {d.parent for d in removed}:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    if removed:
        log.info("prediction log: retention %s removed %d partitions from %s", retention, len(removed), root)
    return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ParquetSink:
    """Writes each segment's records as part files named after the segment (see the module docstring)."""

    def __init__(self, root: Path, *, retention: timedelta | None = None, prune_interval: float = 600.0,
                 sync: bool = True) -> None:
        self.root = Path(root)
        self.batch_size: int | None = None  # a whole segment per write: its id names the files
        self.name = "Parquet store"
        self.retention = retention
        self.prune_interval = prune_interval
        self.sync = sync
        self._last_prune: float | None = None

    def write(self, segment_id: str, records: Sequence[PredictionRecord]) -> None:
        groups: dict[tuple[str, date], list[PredictionRecord]] = {}
        seen: set[tuple[str, str]] = set()
        for rec in records:
            key = (rec.request_id, str(rec.route))
            if key in seen:
                continue  # the table keeps the first of a (request id, route): so does a part file
            seen.add(key)
            groups.setdefault((rec.model, _utc(rec.ts).date()), []).append(rec)
        for (model, day), group in groups.items():
            self._write_part(model_dir(self.root, model) / f"date={day.isoformat()}", segment_id, group)

    def _write_part(self, folder: Path, segment_id: str, records: list[PredictionRecord]) -> None:
        table = pa.Table.from_pydict({
            "request_id": [str(r.request_id) for r in records],
            "model": [str(r.model) for r in records],
            "version": [int(r.version) for r in records],
            "route": [str(r.route) for r in records],
            "inputs": [_json(r.inputs) for r in records],
            "outputs": [_json(r.outputs) for r in records],
            "n_rows": [int(r.n_rows) for r in records],
            "latency_ms": [None if r.latency_ms is None else float(r.latency_ms) for r in records],
            "error": [None if r.error is None else str(r.error) for r in records],
            "meta": [_json(r.meta) for r in records],
            "ts": [_utc(r.ts) for r in records],
        }, schema=SCHEMA)
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-{segment_id}.parquet"
        for stale in folder.glob(f".{final.name}.*.tmp"):  # a shipper killed mid-write (the segment is ours now)
            stale.unlink(missing_ok=True)
        tmp = folder / f".{final.name}.{os.getpid()}-{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
                if self.sync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)  # whole or not at all; a second ship of the segment replaces it
        finally:
            tmp.unlink(missing_ok=True)
        if self.sync:
            _fsync_dir(folder)

    def is_content_error(self, exc: BaseException) -> bool:
        """Records that cannot become a table (never a disk or permission problem: those wait and retry)."""
        return not isinstance(exc, OSError) and isinstance(exc, pa.ArrowException | TypeError | ValueError)

    def maintain(self) -> None:
        if self.retention is None:
            return
        now = time.monotonic()
        if self._last_prune is not None and now - self._last_prune < self.prune_interval:
            return
        self._last_prune = now
        prune(self.root, self.retention)

    def dispose(self) -> None:
        return None


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:
        raise ConfigError("MODELYARD_LOG_TARGET=parquet reads the log with DuckDB: install it with "
                          "pip install 'modelyard[parquet]'") from None
    return duckdb


class ParquetLogReader:
    """Reads the Parquet log with DuckDB, only the partitions a question can touch."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._connection: Any = None
        self._lock = threading.Lock()

    def _files(self, model: str | None, since: datetime | None, until: datetime | None) -> list[str]:
        first = None if since is None else _utc(since).date()
        last = None if until is None else _utc(until).date()
        return [str(p) for day_dir, day in partitions(self.root, model)
                if (first is None or day >= first) and (last is None or day <= last)
                for p in sorted(day_dir.glob("part-*.parquet"))]

    def _query(self, files: list[str], where: list[str], params: list[Any],
               limit: int | None) -> list[PredictionRecord]:
        if not files:
            return []
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM read_parquet(?, hive_partitioning=false, union_by_name=true, "
               "filename=true)" + (" WHERE " + " AND ".join(where) if where else "")
               + " QUALIFY row_number() OVER (PARTITION BY request_id, route ORDER BY ts, filename) = 1"
               " ORDER BY ts DESC, request_id" + (" LIMIT ?" if limit is not None else ""))
        args = [files, *params, *([limit] if limit is not None else [])]
        with self._lock:  # one cursor per query: a DuckDB connection is not shared between threads
            if self._connection is None:
                self._connection = _duckdb().connect()
            cursor = self._connection.cursor()
        try:
            rows = cursor.execute(sql, args).fetchall()
        except Exception:
            still = [f for f in files if os.path.exists(f)]
            if len(still) == len(files):
                raise
            return self._query(still, where, params, limit)  # a partition pruned meanwhile: read the rest
        finally:
            cursor.close()
        return [_to_record(row) for row in rows]

    def by_request(self, request_id: str) -> list[PredictionRecord]:
        found = self._query(self._files(None, None, None), ["request_id = ?"], [request_id], None)
        return sorted(found, key=lambda r: r.ts)

    def select(self, model: str | None = None, *, since: datetime | None = None, until: datetime | None = None,
               route: str | None = None, version: int | None = None,
               limit: int | None = 100) -> list[PredictionRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in (("model", "=", model), ("ts", ">=", since), ("ts", "<", until),
                                  ("route", "=", route), ("version", "=", version)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(_utc(value) if isinstance(value, datetime) else value)
        return self._query(self._files(model, since, until), where, params, limit)


def _to_record(row: tuple[Any, ...]) -> PredictionRecord:
    data = dict(zip(_COLUMNS, row, strict=True))
    for column in _JSON_COLUMNS:
        if data[column] is not None:
            data[column] = orjson.loads(data[column])
    data["ts"] = _utc(data["ts"])
    data["version"] = int(data["version"])
    data["n_rows"] = int(data["n_rows"] or 0)
    return PredictionRecord(**data)
