"""Where a batch run reads its rows: a SQL query, a table, or a CSV/Parquet file, in chunks.

Nothing is read whole: PostgreSQL streams the query through ADBC (a binary ``COPY (query) TO STDOUT``
decoded into Arrow in C, without the GIL; measured: a named cursor's Python tuples, then psycopg's text COPY
handing over one row per Python call, were the batch's largest cost, and their GIL time starved the scoring
thread); other databases use a cursor with ``fetchmany``; files are read chunk by chunk. Resuming skips the
rows already committed: the query is ordered by the key (when there is one) and offset by that count, so the
same rows come back in the same order; without a key the input's own order must be stable (true of files,
not of every query).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from modelyard.errors import BatchError

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
            _, rows = _raw_query(engine, f"SELECT count(*) FROM ({self.query(engine)}) AS modelyard_src")
            return int(rows[0][0])
        except Exception as exc:
            raise BatchError(f"cannot read the input {self.value!r}: {_first_line(exc)}") from exc

    def check_key(self, engine: Engine | None, key: str) -> None:
        """Refuse a ``--key`` the input does not have, before anything is created or ordered by it."""
        if self.kind == "file":
            return  # checked on the first chunk
        assert engine is not None
        try:
            columns, _ = _raw_query(engine, f"SELECT * FROM ({self.query(engine)}) AS modelyard_src LIMIT 0")
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


def _raw_query(engine: Engine, sql: str) -> tuple[list[str], list[Any]]:
    """Run the user's SQL verbatim: no ``:name`` binds (SQLAlchemy) or ``%`` placeholders (psycopg)."""
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
        cursor.execute(sql)
        columns = [d[0] for d in cursor.description]
        return columns, cursor.fetchall()
    finally:
        raw.close()


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]


def _sql_chunks(engine: Engine, query: str, chunk_size: int, key: str | None,
                skip: int) -> Iterator[pd.DataFrame]:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        yield from _pg_chunks(engine, query, chunk_size, key, skip)
        return
    sql = f"SELECT * FROM ({query}) AS modelyard_src"
    if key is not None:
        sql += f" ORDER BY {engine.dialect.identifier_preparer.quote(key)}"
    if skip:
        sql += f" LIMIT -1 OFFSET {int(skip)}" if dialect == "sqlite" else f" OFFSET {int(skip)}"
    raw = engine.raw_connection()
    try:
        cursor = raw.driver_connection.cursor()  # type: ignore[union-attr]
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


# PostgreSQL type OIDs read as they are (bool, int8, float8, and text, varchar, char(n) padded, name) or cast
# by the server to int8 or float8 (float4 through its text, as it prints); anything else (dates, JSON, ...)
# is cast to its text, as COPY's text format printed it.
_PG_AS_IS = {16, 20, 701, 25, 1043, 1042, 19}
_PG_CASTS = {21: "int8", 23: "int8", 26: "int8", 700: "text::float8", 1700: "float8"}


def _pg_chunks(engine: Engine, query: str, chunk_size: int, key: str | None,
               skip: int) -> Iterator[pd.DataFrame]:
    """The query through ADBC: a binary ``COPY ... TO STDOUT`` decoded into Arrow in C, without the GIL.

    The columns are typed first (a ``LIMIT 0`` of the query); each one of a type outside bool, int8,
    float8 and the text types is cast by the server: other integers to int8, NUMERIC and float4 to float8,
    the rest to their text (what the models and ``--keep`` saw of them in the text format)."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    quote = engine.dialect.identifier_preparer.quote
    inner = f"SELECT * FROM ({query}) AS modelyard_src"
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cur:  # type: ignore[union-attr]
            try:
                cur.execute(inner + " LIMIT 0")
            except Exception as exc:
                raise BatchError(f"cannot read the input: {_first_line(exc)}") from exc
            described = [(d.name, d.type_code) for d in cur.description]
    finally:
        raw.close()
    names = [name for name, _ in described]
    if len(set(names)) != len(names):
        raise BatchError(f"the input has duplicate column names: {', '.join(names)}")
    select = ", ".join(
        f"modelyard_src.{quote(name)}" if oid in _PG_AS_IS
        else f"modelyard_src.{quote(name)}::{_PG_CASTS.get(oid, 'text')} AS {quote(name)}"
        for name, oid in described)
    sql = f"SELECT {select} FROM ({query}) AS modelyard_src"
    if key is not None:
        sql += f" ORDER BY modelyard_src.{quote(key)}"
    if skip:
        sql += f" OFFSET {int(skip)}"
    uri = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = adbc.connect(uri)
    except adbc.Error as exc:
        raise BatchError(f"cannot read the input: {_first_line(exc)}") from exc
    with conn, conn.cursor() as cur:
        try:
            cur.execute(sql)
            reader = cur.fetch_record_batch()
        except adbc.Error as exc:
            raise BatchError(f"cannot read the input: {_first_line(exc)}") from exc
        pending: list[Any] = []
        rows = 0
        batches = iter(reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (adbc.Error, pa.ArrowException, OSError) as exc:  # the query failed part way through
                raise BatchError(f"cannot read the input: {_first_line(exc)}") from exc
            pending.append(batch)
            rows += batch.num_rows
            while rows >= chunk_size:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, chunk_size).to_pandas()
                rest = table.slice(chunk_size)
                pending, rows = rest.to_batches(), rest.num_rows
        if rows:
            yield pa.Table.from_batches(pending).to_pandas()


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
