"""Where a batch run reads its rows: a SQL query, a table, or a CSV/Parquet file, in chunks.

SQL is read through a server-side cursor (a named psycopg cursor on PostgreSQL) with ``fetchmany``, so a
table larger than memory streams through one chunk at a time. Resuming skips the rows already committed:
the query is ordered by the key (when there is one) and offset by that count, so the same rows come back in
the same order; without a key the input's own order must be stable (true of files, not of every query).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, text

from modelyard.batch.chunk import BatchError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
FILE_SUFFIXES = {".csv", ".parquet", ".pq"}


@dataclass(frozen=True)
class Source:
    """What ``--from`` named: ``kind`` is ``sql``, ``table`` or ``file``."""

    kind: str
    value: str

    @classmethod
    def parse(cls, spec: str) -> Source:
        stripped = spec.strip().rstrip(";").strip()
        head = stripped.split(None, 1)[0].lower() if stripped else ""
        if head in {"select", "with", "values", "table"}:
            return cls("sql", stripped)
        path = Path(stripped).expanduser()
        if path.suffix.lower() in FILE_SUFFIXES:
            if not path.exists():
                raise BatchError(f"input file {path} does not exist")
            return cls("file", str(path.resolve()))
        if _IDENT.match(stripped):
            return cls("table", stripped)
        raise BatchError(f"--from {spec!r} is neither a SELECT query, a table name nor a .csv/.parquet file")

    def query(self, engine: Engine) -> str:
        """The source as one SELECT statement (tables quoted for the engine's dialect)."""
        if self.kind == "sql":
            return self.value
        if self.kind == "table":
            quote = engine.dialect.identifier_preparer.quote
            return "SELECT * FROM " + ".".join(quote(part) for part in self.value.split("."))
        raise BatchError("a file has no SQL query")

    def count(self, engine: Engine | None) -> int | None:
        """Rows in the input, for the progress bar and the run record (None when it costs a full read)."""
        if self.kind == "file":
            if Path(self.value).suffix.lower() in {".parquet", ".pq"}:
                import pyarrow.parquet as pq

                return int(pq.ParquetFile(self.value).metadata.num_rows)
            return None
        assert engine is not None
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(f"SELECT count(*) FROM ({self.query(engine)}) AS modelyard_src"))
                           .scalar_one())
        except Exception as exc:
            raise BatchError(f"cannot read the input {self.value!r}: {_first_line(exc)}") from exc

    def check_key(self, engine: Engine | None, key: str) -> None:
        """Refuse a ``--key`` the input does not have, before anything is created or ordered by it."""
        if self.kind == "file":
            return  # checked on the first chunk
        assert engine is not None
        try:
            with engine.connect() as conn:
                result = conn.execute(text(f"SELECT * FROM ({self.query(engine)}) AS modelyard_src LIMIT 0"))
                columns = list(result.keys())
        except Exception as exc:
            raise BatchError(f"cannot read the input {self.value!r}: {_first_line(exc)}") from exc
        if key not in columns:
            raise BatchError(f"the key column '{key}' is not in the input (columns: {', '.join(columns)})")

    def chunks(self, engine: Engine | None, chunk_size: int, *, key: str | None = None,
               skip: int = 0) -> Iterator[pd.DataFrame]:
        """Frames of at most ``chunk_size`` rows, starting after the first ``skip`` rows."""
        if self.kind == "file":
            yield from _file_chunks(Path(self.value), chunk_size, skip)
        else:
            assert engine is not None
            yield from _sql_chunks(engine, self.query(engine), chunk_size, key, skip)


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _sql_chunks(engine: Engine, query: str, chunk_size: int, key: str | None,
                skip: int) -> Iterator[pd.DataFrame]:
    dialect = engine.dialect.name
    sql = f"SELECT * FROM ({query}) AS modelyard_src"
    if key is not None:
        sql += f" ORDER BY {engine.dialect.identifier_preparer.quote(key)}"
    if skip:
        sql += f" LIMIT -1 OFFSET {int(skip)}" if dialect == "sqlite" else f" OFFSET {int(skip)}"
    raw = engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        if dialect == "postgresql":  # a named cursor lives on the server: rows arrive chunk by chunk
            cursor = dbapi.cursor(name=f"modelyard_batch_{uuid.uuid4().hex[:12]}")  # type: ignore[union-attr]
            cursor.itersize = chunk_size
        else:
            cursor = dbapi.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql)
        except Exception as exc:
            raise BatchError(f"cannot read the input: {_first_line(exc)}") from exc
        columns: list[str] | None = None
        while True:
            rows = cursor.fetchmany(chunk_size)
            if columns is None:
                columns = [d[0] for d in cursor.description]
            if not rows:
                break
            yield _decimals_to_float(pd.DataFrame.from_records(rows, columns=columns))
        cursor.close()
    finally:
        raw.close()


def _decimals_to_float(frame: pd.DataFrame) -> pd.DataFrame:
    """NUMERIC columns arrive as Decimal objects; the models were trained on floats."""
    for col in frame.columns:
        if frame[col].dtype == object:
            first = frame[col].dropna()
            if len(first) and isinstance(first.iloc[0], Decimal):
                frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def _file_chunks(path: Path, chunk_size: int, skip: int) -> Iterator[pd.DataFrame]:
    if path.suffix.lower() == ".csv":
        reader = pd.read_csv(path, chunksize=chunk_size, skiprows=range(1, skip + 1) if skip else None)
        with reader:
            yield from reader
        return
    import pyarrow.parquet as pq

    to_skip = skip
    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_size):
        if to_skip >= batch.num_rows:
            to_skip -= batch.num_rows
            continue
        frame = batch.to_pandas()
        if to_skip:
            frame, to_skip = frame.iloc[to_skip:], 0
        yield frame.reset_index(drop=True)
