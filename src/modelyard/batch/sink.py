"""The output of a batch run: a predictions table and a ``<table>_rejected`` table in the user's database.

Both carry a unique ``(run_id, key)`` constraint, and a chunk's predictions and rejections are committed in
one transaction, in input order. The rows already committed for a run are therefore exactly a prefix of the
input, and their count is where a resumed run starts; the constraint turns any slip into an error instead of
a duplicate. PostgreSQL is written with binary ``COPY`` (``pgbinary``), other databases with ``executemany``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError as DBIntegrityError

from modelyard.batch.chunk import ScoredChunk
from modelyard.errors import BatchError, RunBusyError

OUTPUT_COLUMNS = ("run_id", "key", "prediction", "model", "version", "scored_at")
OURS = frozenset({*OUTPUT_COLUMNS, "probabilities"}) - {"key"}
REJECTED_COLUMNS = ("run_id", "key", "reason", "field", "row", "rejected_at")


def _split(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def _json_type() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


def _key_type(sample: Any) -> Any:
    return BigInteger() if isinstance(sample, int) and not isinstance(sample, bool) else Text()


def _kept_type(values: Any) -> Any:
    """The SQL type of a column carried through with ``--keep``, after its pandas dtype."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return Boolean()
    if pd.api.types.is_integer_dtype(values):
        return BigInteger()
    if pd.api.types.is_float_dtype(values):
        return Float()
    return Text()


def prediction_kind(task: str, classes: list[Any] | None) -> str:
    """What a prediction column holds: ``float`` (regression), or the classes' ``bool``, ``int`` or ``text``."""
    if task != "classification" or not classes:
        return "float"
    if all(isinstance(c, bool) for c in classes):
        return "bool"
    if all(isinstance(c, int) for c in classes):
        return "int"
    if all(isinstance(c, (int, float)) for c in classes):
        return "float"
    return "text"


def _prediction_type(task: str, classes: list[Any] | None) -> Any:
    return {"float": Float, "bool": Boolean, "int": BigInteger, "text": Text}[prediction_kind(task, classes)]()


def output_columns(key: str | None, keep: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The output's key column (the user's key under its own name; without one, ``key``) and the ``--keep``
    columns beside it; refused when one would clash with a column of ours."""
    name = key or "key"
    kept = tuple(c for c in keep if c != name)
    clash = sorted({name, *kept} & OURS)
    if clash:
        raise BatchError(f"the output table has its own column '{clash[0]}': rename it in the query "
                         f"(SELECT {clash[0]} AS ...) to use it as --key or --keep")
    return name, kept


def is_parquet_target(target: str) -> bool:
    """``--to`` names Parquet output (a ``.parquet`` path, a directory ``PATH/`` or a ``scheme://`` URI),
    written by ``--engine spark``, rather than a table."""
    return target.endswith(("/", ".parquet")) or "://" in target


def rejected_path(target: str) -> str:
    """Where the rejects of a Parquet target go: ``out.parquet`` → ``out_rejected.parquet``, ``dir/`` →
    ``dir_rejected``."""
    base = target.rstrip("/")
    return base[: -len(".parquet")] + "_rejected.parquet" if base.endswith(".parquet") else base + "_rejected"


class Sink:
    """The two tables of one run, created when missing and checked when present."""

    def __init__(self, engine: Engine, name: str, *, task: str, classes: list[Any] | None,
                 key: str | None = None, keep: tuple[str, ...] = ()) -> None:
        self.key, self.keep = output_columns(key, keep)
        self.engine = engine
        self.schema, self.name = _split(name)
        self.rejected_name = f"{self.name}_rejected"
        self.task = task
        self.classes = classes
        self.with_proba = task == "classification"
        self.table: Table | None = None
        self.rejected: Table | None = None
        self._reflect()

    @property
    def ready(self) -> bool:
        return self.table is not None

    def _reflect(self) -> None:
        insp = inspect(self.engine)
        if not insp.has_table(self.name, schema=self.schema):
            return
        md = MetaData()
        table = Table(self.name, md, schema=self.schema, autoload_with=self.engine)
        missing = [c for c in (*OUTPUT_COLUMNS, *self.keep) if c not in table.c and c != "key"]
        if self.key not in table.c:
            missing.insert(0, self.key)
        if missing:
            raise BatchError(f"table '{self.name}' exists but is not a modelyard output table "
                             f"(no column {', '.join(missing)}); choose another --to")
        self.with_proba = "probabilities" in table.c
        rejected = (Table(self.rejected_name, md, schema=self.schema, autoload_with=self.engine)
                    if insp.has_table(self.rejected_name, schema=self.schema) else None)
        self.table, self.rejected = table, rejected
        if rejected is None:
            self._create(table.c[self.key].type, {})

    def create(self, sample_key: Any, frame: Any = None) -> None:
        """Create the tables, typing the key after the first key seen (integer or text) and each ``--keep``
        column after its dtype in ``frame`` (the first chunk)."""
        missing = [c for c in self.keep if frame is None or c not in frame.columns]
        if missing:
            columns = ", ".join(map(str, frame.columns)) if frame is not None else ""
            raise BatchError(f"--keep column '{missing[0]}' is not in the input (columns: {columns})")
        if self.table is None or self.rejected is None:
            self._create(_key_type(sample_key), {c: _kept_type(frame[c]) for c in self.keep})

    def _create(self, key_type: Any, kept: dict[str, Any]) -> None:
        md = MetaData()
        cols = [
            Column("run_id", String(100), nullable=False),
            Column(self.key, key_type, nullable=False),
            *(Column(name, kind, nullable=True) for name, kind in kept.items()),
            Column("prediction", _prediction_type(self.task, self.classes), nullable=True),
        ]
        if self.with_proba:
            cols.append(Column("probabilities", _json_type(), nullable=True))
        cols += [
            Column("model", String(200), nullable=False),
            Column("version", Integer, nullable=False),
            Column("scored_at", DateTime(timezone=True), nullable=False),
        ]
        table = self.table if self.table is not None else Table(
            self.name, md, *cols, UniqueConstraint("run_id", self.key, name=f"uq_{self.name}_run_key"[:63]),
            schema=self.schema)
        rejected = Table(
            self.rejected_name, md,
            Column("run_id", String(100), nullable=False),
            Column("key", Text(), nullable=True),
            Column("position", BigInteger, nullable=False),
            Column("reason", Text, nullable=False),
            Column("field", String(200), nullable=True),
            Column("row", _json_type(), nullable=True),
            Column("rejected_at", DateTime(timezone=True), nullable=False),
            UniqueConstraint("run_id", "position", name=f"uq_{self.rejected_name}_run_pos"[:63]),
            schema=self.schema,
        )
        md.create_all(self.engine, checkfirst=True)
        self.table, self.rejected = table, rejected

    def committed(self, run_id: str) -> tuple[int, int]:
        """(rows scored, rows rejected) already committed for ``run_id``: where a resumed run starts."""
        if self.table is None or self.rejected is None:
            return 0, 0
        with self.engine.connect() as conn:
            scored = conn.execute(select(func.count()).select_from(self.table)
                                  .where(self.table.c.run_id == run_id)).scalar_one()
            rejected = conn.execute(select(func.count()).select_from(self.rejected)
                                    .where(self.rejected.c.run_id == run_id)).scalar_one()
        return int(scored), int(rejected)

    def writer(self) -> ChunkWriter:
        return ChunkWriter(self)


def _lock_key(run_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big", signed=True)


class ChunkWriter:
    """One connection for the whole run: holds the run's lock and commits each chunk atomically."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.conn: Connection | None = None
        self.lock: int | None = None
        self.oids: list[int] | None = None  # the output columns' PostgreSQL types, read at the first COPY

    def open(self, run_id: str) -> None:
        """Connect and take the run's lock before anything is counted or written."""
        self.conn = self.sink.engine.connect()
        if self.conn.dialect.name == "postgresql":
            lock = text("SELECT pg_try_advisory_lock(:k)")
            got = self.conn.execute(lock, {"k": _lock_key(run_id)}).scalar()
            self.conn.commit()
            if not got:
                self.close()
                raise RunBusyError(f"run '{run_id}' is being scored by another process right now")
            self.lock = _lock_key(run_id)

    def close(self) -> None:
        """Release the run's lock (a killed process releases it by losing its session)."""
        if self.conn is not None:
            try:
                if self.lock is not None:
                    self.conn.rollback()
                    self.conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.lock})
                    self.conn.commit()
            finally:
                self.conn.close()
                self.conn, self.lock = None, None

    def write(self, run_id: str, model: str, version: int, chunk: ScoredChunk, first_position: int) -> None:
        """Insert one chunk's predictions and rejections in a single transaction."""
        assert self.conn is not None and self.sink.table is not None and self.sink.rejected is not None
        now = datetime.now(UTC)
        key_is_int = isinstance(self.sink.table.c[self.sink.key].type, (BigInteger, Integer))
        keys = np.asarray(chunk.keys, dtype=np.int64) if key_is_int else np.asarray(chunk.keys).astype(str)
        rejected_rows = [
            {"run_id": run_id, "key": None if r.key is None else str(r.key),  # text: keys may be empty
             "position": first_position + r.position, "reason": r.reason, "field": r.field, "row": r.row,
             "rejected_at": now}
            for r in chunk.rejected
        ]
        try:
            with self.conn.begin():
                if len(keys):
                    if self.conn.dialect.name == "postgresql":
                        self._copy(run_id, model, version, keys, chunk, now)
                    else:
                        self._insert(run_id, model, version, keys, chunk, now)
                if rejected_rows:
                    self.conn.execute(self.sink.rejected.insert(), rejected_rows)
        except DBIntegrityError as exc:
            raise BatchError(
                f"a key was written twice for run '{run_id}': is the --key column unique in the input? "
                f"({str(exc.orig).splitlines()[0]})") from exc

    def _columns(self) -> list[str]:
        cols = ["run_id", self.sink.key, *self.sink.keep, "prediction"]
        if self.sink.with_proba:
            cols.append("probabilities")
        return [*cols, "model", "version", "scored_at"]

    def _copy(self, run_id: str, model: str, version: int, keys: np.ndarray, chunk: ScoredChunk,
              now: datetime) -> None:
        """Binary ``COPY ... FROM STDIN`` (``pgbinary``); CSV made by Arrow (C++, no GIL, shortest round-trip
        floats) when a column's type is not one the binary writer knows."""
        assert self.conn is not None and self.sink.table is not None
        import pyarrow as pa
        import pyarrow.csv as pacsv

        from modelyard.batch import pgbinary

        prep = self.conn.dialect.identifier_preparer
        cols = self._columns()
        target = f"{prep.format_table(self.sink.table)} ({', '.join(prep.quote(c) for c in cols)})"
        dbapi = self.conn.connection.driver_connection
        n = len(keys)
        data: dict[str, Any] = {"run_id": pa.scalar(run_id), self.sink.key: pa.array(keys)}
        for name in self.sink.keep:
            data[name] = pa.array(chunk.kept[name], from_pandas=True)
        data["prediction"] = pa.array(chunk.predictions)
        if self.sink.with_proba:
            data["probabilities"] = chunk.probabilities if chunk.probabilities is not None else pa.nulls(n, pa.string())
        data.update(model=pa.scalar(model), version=pa.scalar(version),
                    scored_at=pa.scalar(now, pa.timestamp("us", tz="UTC")))
        if self.oids is None:
            with dbapi.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(f"SELECT {', '.join(prep.quote(c) for c in cols)} FROM "
                            f"{prep.format_table(self.sink.table)} LIMIT 0")
                self.oids = [d.type_code for d in cur.description]
        body = pgbinary.encode(list(zip(self.oids, data.values(), strict=True)), n)
        if body is None:
            data["scored_at"] = pa.scalar(now.isoformat())
            buffer = pa.BufferOutputStream()
            pacsv.write_csv(pa.table({k: pa.repeat(v, n) if isinstance(v, pa.Scalar) else v
                                      for k, v in data.items()}),
                            buffer, pacsv.WriteOptions(include_header=False))
            body, fmt = buffer.getvalue().to_pybytes(), "csv"
        else:
            fmt = "binary"
        with dbapi.cursor() as cur, cur.copy(f"COPY {target} FROM STDIN (FORMAT {fmt})") as copy:  # type: ignore[union-attr]
            copy.write(body)

    def _insert(self, run_id: str, model: str, version: int, keys: np.ndarray, chunk: ScoredChunk,
                now: datetime) -> None:
        assert self.conn is not None and self.sink.table is not None
        proba = chunk.probabilities if self.sink.with_proba else None
        key = self.sink.key
        rows = [{"run_id": run_id, key: k, "prediction": p, "model": model, "version": version,
                 "scored_at": now} for k, p in zip(keys.tolist(), chunk.predictions.tolist(), strict=True)]
        for name in self.sink.keep:
            values = chunk.kept[name]
            for row, v in zip(rows, values.tolist(), strict=True):
                row[name] = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
        if proba is not None:
            for row, pr in zip(rows, proba.to_pylist(), strict=True):
                row["probabilities"] = orjson.loads(pr)
        self.conn.execute(self.sink.table.insert(), rows)
