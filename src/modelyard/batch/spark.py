"""``--engine spark``: the batch chunk function as a pandas UDF on Spark (``mapInArrow``).

The only module that imports pyspark (an import-linter contract keeps it out of every other package), and
``runner`` imports it only when ``--engine spark`` is asked, so no other command pays for PySpark or a JVM.
Two shapes, chosen by the target:

* ``SparkExecutor`` (``--to TABLE``): the driver reads chunks with the project's own readers, exactly as for
  the local and Dask engines (a query or table of any database modelyard reads, a CSV or Parquet file); each
  chunk is one Spark job (``createDataFrame`` from Arrow, ``mapInArrow(score)``, ``toArrow``) and the driver
  writes the answers through the same ``Sink`` in input order, so resuming, rejects and the run record work
  as for the other engines. Spark itself reaches no database: that takes a JDBC jar, which would be a
  download at run time.
* ``score_parquet`` (``--to PATH.parquet`` or ``PATH/``): Parquet in (a file, a directory, a glob, any URI
  the session's Hadoop file systems read) and Parquet out, through Spark's own reader and writer; the driver
  only plans. The unit of commit is the Spark job (Spark retries a failed task itself): a failed run rerun
  with its ``--run-id`` overwrites its own output, a new run never overwrites an existing path.

Either way each Python worker loads the pinned version once (``load_pinned``: from the registry, checksums
verified) and scores each Arrow batch with ``score_chunk``, the local engine's own function, so the answers
(predictions, probabilities, reject reasons and positions) are the local engine's.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from modelyard.batch.chunk import Rejected, ScoredChunk, load_pinned, score_chunk
from modelyard.batch.sink import output_columns, prediction_kind, rejected_path
from modelyard.config import Settings
from modelyard.errors import BatchError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

DEFAULT_MASTER = "local[*]"
# PySpark 4 warns on every conversion that it does not fully support pandas 3. Our UDF hands Spark Arrow
# batches (mapInArrow, createDataFrame from an Arrow table), and the tests check the answers against the
# local engine's; the warning would repeat for every chunk of a CLI run.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)

# Columns of the UDF's output beside the user's key, the --keep columns, "prediction" and "probabilities".
KIND, POS, REASON, FIELD, ROW, RKEY, INPUT = ("_my_kind", "_my_pos", "_my_reason", "_my_field", "_my_row",
                                             "_my_rkey", "_my_input")
SCORED, REJECTED = 0, 1


def _import_pyspark() -> Any:
    try:
        import pyspark
        import pyspark.sql
    except ImportError as exc:
        raise BatchError("--engine spark needs PySpark, which is not installed here: "
                         "pip install 'modelyard[spark]' (it also needs Java 17 or newer)") from exc
    return pyspark


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home:
        return str(Path(home) / "bin" / "java") if (Path(home) / "bin" / "java").exists() else None
    return shutil.which("java")


_session_lock = threading.Lock()


def session(master: str | None = None) -> SparkSession:
    """The process's Spark session: the active one if the caller made one, else one on ``master``
    (``local[*]`` by default). Spark's own settings come from ``spark-defaults.conf`` or
    ``PYSPARK_SUBMIT_ARGS``; nothing is downloaded (no ``spark.jars.packages``)."""
    _import_pyspark()
    from pyspark.sql import SparkSession

    with _session_lock:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        if _java() is None:
            where = "JAVA_HOME/bin/java" if os.environ.get("JAVA_HOME") else "java on the PATH"
            raise BatchError(f"--engine spark needs Java 17 or newer and found no {where}: install a JDK "
                             "(java -version) or set JAVA_HOME")
        master = master or DEFAULT_MASTER
        builder = (SparkSession.builder.master(master).appName("modelyard score")
                   .config("spark.ui.showConsoleProgress", "false"))
        if master.startswith("local"):  # the executors are this machine's: this interpreter, on loopback
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # read by the UDFs' workers (not a conf)
            builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress",
                                                                               "127.0.0.1")
        try:
            spark = builder.getOrCreate()
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BatchError(f"Spark could not start on {master} ({first}): --engine spark needs Java 17 or "
                             "newer (java -version, JAVA_HOME)") from exc
        spark.sparkContext.setLogLevel("ERROR")
        return spark


# ---- the UDF: runs in Spark's Python workers ---------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What a worker needs to score: plain data, pickled into every task."""

    settings: Settings
    name: str
    version: int
    key: str | None  # the input's key column (None: the key is the row's position)
    key_name: str  # the output's key column
    keep: tuple[str, ...]
    with_proba: bool
    prediction: str  # prediction_kind: float, int, bool or text
    with_inputs: bool = False


def _score_batches(batches: Iterator[pa.RecordBatch], plan: _Plan) -> Iterator[pa.RecordBatch]:
    """``mapInArrow``'s function: every batch scored by ``score_chunk`` with the model loaded once."""
    from threadpoolctl import threadpool_limits

    model = load_pinned(plan.settings, plan.name, plan.version)
    with threadpool_limits(1, user_api="openmp"):  # one Python worker per core already
        for batch in batches:
            if batch.num_rows:
                yield _score_batch(model, batch, plan)


def _score_batch(model: Any, batch: pa.RecordBatch, plan: _Plan) -> pa.RecordBatch:
    positions = batch.column(POS).to_numpy()
    start = int(positions[0])
    if not np.array_equal(positions, np.arange(start, start + len(positions))):
        raise BatchError("internal: a Spark batch's rows are not consecutive input rows")
    inputs = batch.drop_columns([POS]) if hasattr(batch, "drop_columns") else pa.RecordBatch.from_arrays(
        [batch.column(i) for i, n in enumerate(batch.schema.names) if n != POS],
        names=[n for n in batch.schema.names if n != POS])
    frame = inputs.to_pandas()
    chunk = score_chunk(model, frame, plan.key, start, with_inputs=plan.with_inputs, keep=plan.keep)
    n = batch.num_rows
    rejected_at = np.asarray([r.position for r in chunk.rejected], dtype=np.int64)
    scored_at = np.setdiff1d(np.arange(n, dtype=np.int64), rejected_at)
    if len(scored_at) != len(chunk.keys):
        raise BatchError("internal: a scored chunk lost track of its rows")
    ns, nr = len(scored_at), len(rejected_at)
    take = pa.array(scored_at, pa.int64())

    def column(values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Scored rows' values of an input column, then nulls for the rejected rows."""
        return pa.concat_arrays([_one(values.take(take)), pa.nulls(nr, values.type)])

    def ours(values: list[Any], kind: pa.DataType, *, rejected: bool) -> pa.Array:
        nulls = pa.nulls(nr if not rejected else ns, kind)
        return pa.concat_arrays([nulls, pa.array(values, kind)] if rejected else [pa.array(values, kind), nulls])

    arrays: dict[str, pa.Array] = {
        KIND: pa.array(np.r_[np.full(ns, SCORED, np.int8), np.full(nr, REJECTED, np.int8)], pa.int8()),
        POS: pa.array(np.r_[scored_at, rejected_at] + start, pa.int64()),
        plan.key_name: (column(inputs.column(plan.key)) if plan.key is not None
                        else ours(np.asarray(chunk.keys, np.int64).tolist(), pa.int64(), rejected=False)),
    }
    for name in plan.keep:
        arrays[name] = column(inputs.column(name))
    arrays["prediction"] = ours(_predictions(chunk.predictions, plan.prediction), _ARROW[plan.prediction],
                                rejected=False)
    if plan.with_proba:
        proba = chunk.probabilities if chunk.probabilities is not None else pa.nulls(ns, pa.string())
        arrays["probabilities"] = pa.concat_arrays([proba.cast(pa.string()), pa.nulls(nr, pa.string())])
    if plan.with_inputs:
        rows = [orjson.dumps(r).decode() for r in chunk.inputs] if chunk.inputs else [None] * ns
        arrays[INPUT] = ours(rows, pa.string(), rejected=False)
    arrays[REASON] = ours([r.reason for r in chunk.rejected], pa.string(), rejected=True)
    arrays[FIELD] = ours([r.field for r in chunk.rejected], pa.string(), rejected=True)
    arrays[ROW] = ours([orjson.dumps(r.row).decode() for r in chunk.rejected], pa.string(), rejected=True)
    arrays[RKEY] = ours([None if r.key is None else str(r.key) for r in chunk.rejected], pa.string(),
                        rejected=True)
    return pa.RecordBatch.from_arrays(list(arrays.values()), names=list(arrays))


_ARROW = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "text": pa.string()}


def _one(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _predictions(values: np.ndarray, kind: str) -> list[Any]:
    if kind == "text":
        return [None if v is None else str(v) for v in values.tolist()]
    return list(values.tolist())


def _output_schema(input_schema: StructType, plan: _Plan) -> StructType:
    """The Spark schema ``_score_batch`` returns, typed after the input's key and --keep columns."""
    from pyspark.sql.types import (
        BooleanType,
        ByteType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    spark_kind: dict[str, DataType] = {"float": DoubleType(), "int": LongType(), "bool": BooleanType(),
                                       "text": StringType()}
    fields = [StructField(KIND, ByteType(), False), StructField(POS, LongType(), False),
              StructField(plan.key_name, input_schema[plan.key].dataType if plan.key else LongType(), True)]
    fields += [StructField(name, input_schema[name].dataType, True) for name in plan.keep]
    fields.append(StructField("prediction", spark_kind[plan.prediction], True))
    if plan.with_proba:
        fields.append(StructField("probabilities", StringType(), True))
    if plan.with_inputs:
        fields.append(StructField(INPUT, StringType(), True))
    fields += [StructField(name, StringType(), True) for name in (REASON, FIELD, ROW, RKEY)]
    return StructType(fields)


def _check_columns(columns: list[str], key: str | None, keep: tuple[str, ...]) -> None:
    listing = ", ".join(columns)
    if key is not None and key not in columns:
        raise BatchError(f"the key column '{key}' is not in the input (columns: {listing})")
    for name in keep:
        if name not in columns:
            raise BatchError(f"--keep column '{name}' is not in the input (columns: {listing})")


def make_plan(settings: Settings, name: str, version: int, *, key: str | None, keep: tuple[str, ...],
              task: str, classes: list[Any] | None, with_inputs: bool = False) -> _Plan:
    key_name, kept = output_columns(key, keep)
    return _Plan(settings, name, version, key, key_name, kept, task == "classification",
                 prediction_kind(task, classes), with_inputs)


# ---- --to TABLE: the driver's chunks scored on Spark, written by the Sink --------------------------------


class SparkExecutor:
    """Each chunk the driver reads is one Spark job; two run at once, so the next is scored while the
    writer commits the last. Results come back in input order as the ``ScoredChunk`` the sink takes.
    ``skip`` is where a resumed run starts: rows are named by their place in the whole input."""

    window = 2

    def __init__(self, spark: SparkSession, plan: _Plan, skip: int = 0) -> None:
        self.spark, self.plan, self.skip = spark, plan, skip
        self.pool = ThreadPoolExecutor(max_workers=self.window, thread_name_prefix="spark-job")

    def submit(self, frame: pd.DataFrame, offset: int) -> Future[ScoredChunk]:
        return self.pool.submit(self._score, frame, offset)

    def _score(self, frame: pd.DataFrame, offset: int) -> ScoredChunk:
        from functools import partial

        first = self.skip + offset
        table = _arrow(frame)
        table = table.append_column(POS, pa.array(np.arange(first, first + len(frame), dtype=np.int64)))
        df = self.spark.createDataFrame(table)
        schema = _output_schema(df.schema, self.plan)
        out = df.mapInArrow(partial(_score_batches, plan=self.plan), schema).toArrow()
        return _to_chunk(out.sort_by(POS), self.plan, first)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """The chunk as Arrow for ``createDataFrame``; an object column of mixed Python types (a value SQLite
    stored as text in a numeric column) goes as text, which the schema then parses or refuses as it would."""
    frame = frame.reset_index(drop=True)
    try:
        return _small_strings(pa.Table.from_pandas(frame, preserve_index=False))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        frame = frame.copy()
        for name in frame.columns:
            if frame[name].dtype == object:
                frame[name] = frame[name].map(lambda v: v if v is None or isinstance(v, str) else str(v))
        return _small_strings(pa.Table.from_pandas(frame, preserve_index=False))


def _small_strings(table: pa.Table) -> pa.Table:
    """pandas 3 strings arrive as ``large_string``; Spark's default Arrow strings are ``string``."""
    fields = [pa.field(f.name, pa.string()) if pa.types.is_large_string(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def _to_chunk(out: pa.Table, plan: _Plan, offset: int) -> ScoredChunk:
    kinds = out.column(KIND).to_numpy()
    scored = out.filter(pa.array(kinds == SCORED))
    rejected = out.filter(pa.array(kinds == REJECTED))

    def values(table: pa.Table, name: str) -> np.ndarray:
        return np.asarray(table.column(name).to_pandas().to_numpy())

    probabilities = None
    if plan.with_proba and scored.num_rows:
        probabilities = scored.column("probabilities").combine_chunks()
    inputs = [orjson.loads(r) for r in scored.column(INPUT).to_pylist()] if plan.with_inputs else None
    return ScoredChunk(
        keys=values(scored, plan.key_name),
        predictions=values(scored, "prediction"),
        probabilities=probabilities,
        rejected=[Rejected(key, reason, field, orjson.loads(row), int(pos) - offset)
                  for key, reason, field, row, pos in zip(*(rejected.column(c).to_pylist()
                                                            for c in (RKEY, REASON, FIELD, ROW, POS)),
                                                          strict=True)],
        inputs=inputs or None,
        kept={name: values(scored, name) for name in plan.keep},
    )


# ---- --to PATH.parquet: Spark's reader and writer --------------------------------------------------------


def parquet_source(spec: str) -> str:
    """``--from`` for a Parquet ``--to``: a Parquet file, a directory of them, a glob, or a URI."""
    spec = spec.strip()
    if "://" in spec:
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        return str(path.resolve())
    if any(ch in spec for ch in "*?[") and any(path.parent.glob(path.name)):
        return str(path.parent.resolve() / path.name)
    raise BatchError(f"--from {spec!r}: no such file, directory or glob")


@dataclass
class ParquetResult:
    scored: int
    rejected: int


def _positions(df: DataFrame) -> DataFrame:
    """``df`` with each row's position in Spark's read order (for one file: the file's own order), found
    from the row counts of the scan's partitions, so a reject names the row the local engine would."""
    from pyspark.sql import functions as F

    pid = F.spark_partition_id()
    counts = {int(r["p"]): int(r["count"]) for r in df.select(pid.alias("p")).groupBy("p").count().collect()}
    starts, total = [], 0
    for p in range(max(counts, default=-1) + 1):
        starts.append(total)
        total += counts.get(p, 0)
    if not starts:
        return df.withColumn(POS, F.lit(0).cast("long"))
    first = F.element_at(F.array(*[F.lit(s).cast("long") for s in starts]), pid + 1)
    return df.withColumn(POS, first + F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1))


def _exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists on its Hadoop file system (local, s3a://, hdfs://, ...), asked before scoring."""
    jvm, conf = spark.sparkContext._jvm, spark.sparkContext._jsc.hadoopConfiguration()
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]
    return bool(hadoop_path.getFileSystem(conf).exists(hadoop_path))


def score_parquet(spark: SparkSession, source: str, target: str, plan: _Plan, *, run_id: str,
                  overwrite: bool) -> ParquetResult:
    """Score Parquet ``source`` into Parquet ``target`` and its ``_rejected`` sibling with Spark alone."""
    from pyspark.errors import AnalysisException
    from pyspark.sql import functions as F
    from pyspark.storagelevel import StorageLevel

    try:
        df = spark.read.parquet(source)
    except AnalysisException as exc:
        raise BatchError(f"cannot read the Parquet input {source!r}: {str(exc).splitlines()[0]}") from exc
    _check_columns(df.columns, plan.key, plan.keep)
    if not overwrite:
        taken = [path for path in (target, rejected_path(target)) if _exists(spark, path)]
        if taken:
            raise BatchError(f"{taken[0]} already exists: a new run never overwrites a path; choose another "
                             "--to (or rerun the run that wrote it with its --run-id)")
    from functools import partial

    scored = _positions(df).mapInArrow(partial(_score_batches, plan=plan), _output_schema(df.schema, plan))
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
    now = datetime.now(UTC)
    mode = "overwrite" if overwrite else "errorifexists"
    try:
        cols: list[Any] = [F.lit(run_id).alias("run_id"), plan.key_name, *plan.keep, "prediction",
                *(["probabilities"] if plan.with_proba else []), F.lit(plan.name).alias("model"),
                F.lit(plan.version).alias("version"), F.lit(now).alias("scored_at")]
        rejected_cols = [F.lit(run_id).alias("run_id"), F.col(RKEY).alias("key"), F.col(POS).alias("position"),
                         F.col(REASON).alias("reason"), F.col(FIELD).alias("field"), F.col(ROW).alias("row"),
                         F.lit(now).alias("rejected_at")]
        try:
            scored.filter(F.col(KIND) == SCORED).select(*cols).write.mode(mode).parquet(target)
            (scored.filter(F.col(KIND) == REJECTED).select(*rejected_cols).coalesce(1)
             .sortWithinPartitions("position").write.mode(mode).parquet(rejected_path(target)))
        except AnalysisException as exc:  # a path that appeared meanwhile
            if "PATH_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
                raise BatchError(f"{target} or {rejected_path(target)} already exists: a new run never "
                                 "overwrites a path; choose another --to") from exc
            raise
        counts = {int(r[KIND]): int(r["count"]) for r in scored.groupBy(KIND).count().collect()}
    finally:
        scored.unpersist()
    return ParquetResult(counts.get(SCORED, 0), counts.get(REJECTED, 0))
