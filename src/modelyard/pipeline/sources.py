"""Read training data from a CSV, a Parquet file or a SQL query, and fingerprint it as read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from modelyard.errors import DataSourceError
from modelyard.registry.userdb import read_query

SQL_PREFIXES = ("sqlite:", "postgresql", "postgres:", "mysql", "mariadb", "mssql", "oracle")


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


def read_source(source: str, *, query: str | None = None, base_dir: Path | None = None) -> LoadedData:
    if is_sql(source):
        if not query:
            raise DataSourceError(f"data.source is a database URL ({source}); set data.query to the SELECT")
        try:
            frame = read_query(source, query)
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
