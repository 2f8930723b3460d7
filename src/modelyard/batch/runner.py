"""``score``: one batch run from a source to an output table, in-process, on a Dask cluster or on Spark.

Why the driver writes and Dask workers only score: ordered, atomic chunk commits make the committed rows a
prefix of the input, which is all a resumed run needs to know (see ``sink``); the output database sees one
writer using COPY instead of many small ones; and workers need the registry (to load the pinned version and
verify its checksums) but never the user's output database. The driver's own work (reading and writing)
overlaps with the scoring (see ``pipeline``). Spark (``--engine spark``, module ``spark``, imported only
then) scores the driver's chunks the same way, or reads and writes Parquet itself for a Parquet ``--to``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from modelyard.batch.chunk import ScoredChunk, load_pinned, score_chunk
from modelyard.batch.executor import DaskExecutor, Executor, LocalExecutor, run_stages
from modelyard.batch.runs import RunRecord, get_run, open_run, record_progress
from modelyard.batch.sink import ChunkWriter, Sink, is_parquet_target
from modelyard.batch.source import Source
from modelyard.config import Settings, normalize_database_url
from modelyard.errors import BatchError, RunBusyError
from modelyard.monitor.fleet import FleetMember
from modelyard.predlog import PredictionLogWriter, PredictionRecord, insert_records
from modelyard.registry import Registry, parse_ref
from modelyard.registry.db import Engine, get_engine
from modelyard.registry.userdb import redact
from modelyard.registry.userdb import user_engine as _user_engine

ProgressFn = Any  # Callable[[rows done, total rows or None], None]
ENGINES = ("local", "dask", "spark")


@dataclass
class BatchResult:
    run_id: str
    model: str
    version: int
    table: str
    rows_scored: int
    rows_rejected: int
    row_count: int | None
    seconds: float
    status: str
    resumed: bool = False
    already_done: bool = False

    @property
    def rows_per_second(self) -> float:
        return (self.rows_scored + self.rows_rejected) / self.seconds if self.seconds > 0 else 0.0


def new_run_id(model: str) -> str:
    return f"{model}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def user_engine(url: str, settings: Settings) -> Engine:
    """The database holding the input and output tables (the registry's unless ``--db`` says otherwise)."""
    url = normalize_database_url(url)
    if url == settings.resolved_database_url:
        return get_engine(url)
    return _user_engine(url)


def portable_settings(settings: Settings) -> Settings:
    """Settings with absolute paths, so a worker started elsewhere finds the same registry."""
    return Settings(home=settings.home.resolve(), database_url=settings.resolved_database_url,
                    artifact_root=settings.resolved_artifact_root, cache_dir=settings.resolved_cache_dir,
                    actor=settings.actor)


def score(ref: str, *, source: str, target: str, settings: Settings, db: str | None = None,
          key: str | None = None, chunk_size: int = 20_000, run_id: str | None = None,
          cluster: str | None = None, log_rows: bool = False, progress: ProgressFn | None = None,
          threads: int | None = 1, keep: tuple[str, ...] = (), engine: str | None = None) -> BatchResult:
    """Score ``source`` with model ``ref`` into ``target``; rerunning a ``run_id`` resumes it.

    ``threads`` caps the OpenMP threads of in-process predictions (None: the library's default). The
    output table holds the key under the ``key`` column's own name (``key`` without one) and the input
    columns named in ``keep``. ``engine`` is ``local``, ``dask`` (on the scheduler ``cluster``; the default
    when one is given) or ``spark`` (on the master ``cluster``, ``local[*]`` by default).
    """
    if chunk_size < 1:
        raise BatchError("--chunk-size must be at least 1")
    engine = engine or ("dask" if cluster else "local")
    if engine not in ENGINES:
        raise BatchError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "dask" and not cluster:
        raise BatchError("--engine dask needs --cluster tcp://HOST:PORT (a Dask scheduler)")
    registry = Registry(settings)
    name, selector = parse_ref(ref)
    src = _source(source, target, engine, log_rows)
    db_url = normalize_database_url(db or settings.resolved_database_url)
    run_id = run_id or new_run_id(name)
    previous = get_run(registry.engine, run_id)
    version = previous.version if previous else registry.resolve(ref).version
    run = open_run(registry.engine, run_id, model=name, version=version, source=src.value, target=target,
                   details={"db": redact(db_url), "key": key, "chunk_size": chunk_size, "cluster": cluster,
                            "source_kind": src.kind, "engine": engine})
    if run.status == "done":
        return BatchResult(run_id, name, run.version, target, run.rows_scored, run.rows_rejected,
                           run.row_count, 0.0, "done", resumed=True, already_done=True)
    serving = [{"model": name, "alias": selector if isinstance(selector, str) else None, "version": run.version,
                "weight": None, "pinned": True}]  # a run keeps the version it started with
    member = FleetMember.from_settings(settings, registry.engine, "batch", lambda: serving,
                                       details={"run_id": run_id, "target": target})
    member.beat_if_due()
    job = _Job(run=run, registry=registry, settings=settings, src=src, engine=user_engine(db_url, settings),
               target=target, key=key, chunk_size=chunk_size, cluster=cluster, log_rows=log_rows,
               progress=progress, threads=threads, member=member, keep=tuple(keep), engine_name=engine)
    try:
        return job.execute()
    except RunBusyError:
        raise  # the process that holds the run keeps its record
    except BaseException as exc:
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc).splitlines()[0][:500]
        try:
            record_progress(registry.engine, run, scored=run.rows_scored, rejected=run.rows_rejected,
                            status="failed", details={"error": reason})
        except Exception:
            pass
        raise
    finally:
        member.stop()


def _source(source: str, target: str, engine: str, log_rows: bool) -> Source:
    """What ``--from`` names, checked against where ``--to`` writes (a table, or Parquet through Spark)."""
    if not is_parquet_target(target):
        return Source.parse(source)
    if engine != "spark":
        raise BatchError(f"--to {target!r} names Parquet output, which --engine spark writes; the local and "
                         "Dask engines write a table (--to TABLE)")
    if log_rows:
        raise BatchError("--log-rows is not supported with a Parquet --to (score into a table for that)")
    from modelyard.batch.spark import parquet_source

    refusal = BatchError(f"a Parquet --to takes Parquet input (a file, a directory of them, a glob or a URI), "
                         f"not {source.strip()!r}: score a query, a table or a CSV file --to TABLE")
    if source.strip().lower().endswith(".csv"):
        raise refusal
    try:
        return Source("file", parquet_source(source))
    except BatchError as exc:
        raise refusal from exc


@dataclass
class _Job:
    run: RunRecord
    registry: Registry
    settings: Settings
    src: Source
    engine: Engine
    target: str
    key: str | None
    chunk_size: int
    cluster: str | None
    log_rows: bool
    progress: ProgressFn | None
    threads: int | None
    keep: tuple[str, ...] = ()
    engine_name: str = "local"
    started: float = field(default_factory=time.perf_counter)
    skip: int = 0
    recorded: float = 0.0
    row_count: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"scored": 0, "rejected": 0, "attempt": 0})
    log: PredictionLogWriter | None = None  # --log-rows: written ahead before each chunk's output commit
    member: FleetMember | None = None  # this run's fleet heartbeat

    def execute(self) -> BatchResult:
        if self.log_rows:
            self.log = PredictionLogWriter.from_settings(self.settings).start()
        try:
            return self._execute()
        finally:
            if self.log is not None:
                self.log.stop()  # ships; what the database cannot take now waits in the segments

    def _execute(self) -> BatchResult:
        run = self.run
        model = load_pinned(self.settings, run.model, run.version)
        if self.engine_name == "spark" and is_parquet_target(self.target):
            return self._execute_parquet(model)
        if self.key is not None:
            self.src.check_key(self.engine if self.src.kind != "file" else None, self.key)
        self.sink = Sink(self.engine, self.target, task=model.task, classes=model.classes_, key=self.key,
                         keep=self.keep)
        self.writer: ChunkWriter = self.sink.writer()
        self.writer.open(run.run_id)  # the run's lock, before counting what is already there
        try:
            scored, rejected = self.sink.committed(run.run_id)
            self.counts.update(scored=scored, rejected=rejected)
            self.skip = scored + rejected
            self.row_count = self.src.count(self.engine if self.src.kind != "file" else None)
            record_progress(self.registry.engine, run, scored=scored, rejected=rejected,
                            row_count=self.row_count,
                            details={"resumed_at_row": self.skip} if self.skip else None)
            if self.progress:
                self.progress(self.skip, self.row_count)
            executor: Executor
            if self.engine_name == "spark":
                from modelyard.batch import spark

                plan = spark.make_plan(portable_settings(self.settings), run.model, run.version, key=self.key,
                                       keep=self.keep, task=model.task, classes=model.classes_,
                                       with_inputs=self.log_rows)
                executor = spark.SparkExecutor(spark.session(self.cluster), plan, self.skip)
            elif self.engine_name == "dask":
                assert self.cluster is not None
                executor = DaskExecutor(self.cluster, portable_settings(self.settings), run.model,
                                        run.version, self.key, self.log_rows, self.keep)
            else:
                executor = LocalExecutor(lambda frame, offset: score_chunk(
                    model, frame, self.key, self.skip + offset, with_inputs=self.log_rows, keep=self.keep),
                    self.threads)
            try:
                chunks = self.src.chunks(self.engine if self.src.kind != "file" else None, self.chunk_size,
                                         key=self.key, skip=self.skip)
                run_stages(chunks, executor, self.write, self.on_first)
            finally:
                executor.close()
        finally:
            self.writer.close()
        return self.finish()

    def _execute_parquet(self, model: Any) -> BatchResult:
        """Parquet in, Parquet out, on Spark alone: one job, whose output a rerun of the run overwrites."""
        from modelyard.batch import spark

        run = self.run
        plan = spark.make_plan(portable_settings(self.settings), run.model, run.version, key=self.key,
                               keep=self.keep, task=model.task, classes=model.classes_)
        session = spark.session(self.cluster)
        if self.progress:
            self.progress(0, None)
        done = spark.score_parquet(session, self.src.value, self.target, plan, run_id=run.run_id,
                                   overwrite=run.resumed)
        self.counts.update(scored=done.scored, rejected=done.rejected, attempt=done.scored + done.rejected)
        self.row_count = done.scored + done.rejected
        if self.progress:
            self.progress(self.row_count, self.row_count)
        return self.finish()

    def on_first(self, frame: pd.DataFrame, offset: int) -> None:
        """Create the output tables, typing ``key`` after the first key of the input."""
        if self.key is not None and self.key not in frame.columns:
            columns = ", ".join(map(str, frame.columns))
            raise BatchError(f"the key column '{self.key}' is not in the input (columns: {columns})")
        missing = [c for c in self.keep if c not in frame.columns]
        if missing:
            columns = ", ".join(map(str, frame.columns))
            raise BatchError(f"--keep column '{missing[0]}' is not in the input (columns: {columns})")
        if self.sink.ready:
            return
        sample: Any = self.skip + offset
        if self.key is not None and self.key in frame.columns and frame[self.key].notna().any():
            value = frame[self.key].dropna().iloc[0]
            sample = value.item() if hasattr(value, "item") else value
        self.sink.create(sample, frame)

    def write(self, offset: int, chunk: ScoredChunk) -> None:
        run = self.run
        if self.log is not None and len(chunk.keys):
            inputs: list[dict[str, Any] | None] = list(chunk.inputs) if chunk.inputs else [None] * len(chunk.keys)
            self.log.commit_sync([
                PredictionRecord(request_id=f"{run.run_id}:{k}", model=run.model, version=run.version,
                                 route="batch", inputs=[row] if row is not None else None, outputs=[p],
                                 meta={"run_id": run.run_id, "table": self.target})
                for k, p, row in zip(chunk.keys.tolist(), chunk.predictions.tolist(), inputs, strict=True)
            ])
        self.writer.write(run.run_id, run.model, run.version, chunk, self.skip + offset)
        self.counts["scored"] += len(chunk.keys)
        self.counts["rejected"] += len(chunk.rejected)
        self.counts["attempt"] += chunk.n_rows
        if time.perf_counter() - self.recorded >= 1.0:  # the output tables are the truth; this is for humans
            self.recorded = time.perf_counter()
            record_progress(self.registry.engine, run, scored=self.counts["scored"],
                            rejected=self.counts["rejected"])
        if self.member is not None:
            self.member.beat_if_due()
        if self.progress:
            self.progress(self.counts["scored"] + self.counts["rejected"], self.row_count)

    def finish(self) -> BatchResult:
        run, counts = self.run, self.counts
        seconds = time.perf_counter() - self.started
        total = self.row_count if self.row_count is not None else counts["scored"] + counts["rejected"]
        rate = counts["attempt"] / seconds if seconds > 0 else 0.0
        record_progress(self.registry.engine, run, scored=counts["scored"], rejected=counts["rejected"],
                        row_count=total, status="done",
                        details={"seconds": round(seconds, 3), "rows_per_second": round(rate, 1)})
        insert_records(self.registry.engine, [PredictionRecord(
            request_id=run.run_id, model=run.model, version=run.version, route="batch",
            inputs={"source": self.src.value, "db": run.details.get("db"), "key": self.key},
            outputs={"table": self.target, "rows_scored": counts["scored"],
                     "rows_rejected": counts["rejected"]},
            n_rows=counts["scored"], latency_ms=seconds * 1000.0,
            meta={"run_id": run.run_id, "cluster": self.cluster, "engine": self.engine_name,
                  "attempts": run.details.get("attempts")},
        )])
        return BatchResult(run.run_id, run.model, run.version, self.target, counts["scored"],
                           counts["rejected"], total, seconds, "done", resumed=run.resumed)
