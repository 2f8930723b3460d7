"""Read training data from a CSV, a Parquet file or a SQL query, and fingerprint it as read."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from modelyard.bundle import DataWindow
from modelyard.durations import format_duration
from modelyard.errors import DataSourceError, SpecError
from modelyard.registry.userdb import read_query

SQL_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql", "mariadb", "mssql", "oracle")
WINDOW_PLACEHOLDER = re.compile(r"\{(window_start|window_end)\}")


@dataclass(frozen=True)
class LoadedData:
    frame: pd.DataFrame
    sha256: str
    description: str
    location: str


def frame_sha256(frame: pd.DataFrame) -> str:
    """A fingerprint of the data as read: column names, dtypes and every value, order included."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(frame[c].dtype)) for c in frame.columns]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def is_sql(source: str) -> bool:
    return source.lower().startswith(SQL_PREFIXES)


def is_windowed(query: str | None) -> bool:
    """Whether a query reads a moving window (holds ``{window_start}`` or ``{window_end}``)."""
    return bool(query and WINDOW_PLACEHOLDER.search(query))


def window_ending(end: datetime, length: timedelta) -> DataWindow:
    """The window of ``length`` ending at ``end`` (UTC)."""
    end = end.astimezone(UTC) if end.tzinfo else end.replace(tzinfo=UTC)
    return DataWindow(start=(end - length).isoformat(), end=end.isoformat(), length=format_duration(length))


def bind_window(query: str, window: DataWindow | None) -> tuple[str, dict[str, datetime]]:
    """The query with ``{window_start}``/``{window_end}`` turned into bound parameters, and their values.

    The values are never formatted into the SQL: each placeholder becomes ``:window_start`` (or
    ``:window_end``) and the driver binds the datetime."""
    if not is_windowed(query):
        return query, {}
    if window is None:
        raise SpecError("data.query reads a moving window ({window_start}/{window_end}): give the window "
                        "(`modelyard retrain --window 30d`, or `window = \"30d\"` in [data])")
    values = {"window_start": datetime.fromisoformat(window.start), "window_end": datetime.fromisoformat(window.end)}
    return WINDOW_PLACEHOLDER.sub(lambda m: f":{m.group(1)}", query), values


def read_source(source: str, *, query: str | None = None, base_dir: Path | None = None,
                window: DataWindow | None = None) -> LoadedData:
    if window is not None and not is_windowed(query if is_sql(source) else None):
        raise SpecError("a window was given but data.query holds no {window_start}/{window_end} to bind it to")
    if is_sql(source):
        if not query:
            raise DataSourceError(f"data.source is a database URL ({source}); set data.query to the SELECT")
        sql, params = bind_window(query, window)
        try:
            frame = read_query(source, sql, params)
        except Exception as exc:
            raise DataSourceError(f"cannot run data.query against {source}: {exc}".splitlines()[0]) from exc
        return LoadedData(frame, frame_sha256(frame), f"sql:{query}", source)
    path = Path(source)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.exists():
        raise DataSourceError(f"data file {path} does not exist")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise DataSourceError(f"data file {path}: use .csv or .parquet")
    except DataSourceError:
        raise
    except Exception as exc:
        raise DataSourceError(f"cannot read {path}: {exc}".splitlines()[0]) from exc
    return LoadedData(frame, frame_sha256(frame), f"file:{path.name}", str(path.resolve()))
