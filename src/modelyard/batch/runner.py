"""``score``: one batch run from a source to an output table, in-process or on a Dask cluster.

Why the driver writes and Dask workers only score: ordered, atomic chunk commits make the committed rows a
prefix of the input, which is all a resumed run needs to know (see ``sink``); the output database sees one
writer using COPY instead of many small ones; and workers need the registry (to load the pinned version and
verify its checksums) but never the user's output database. The driver's own work (reading and writing)
overlaps with the scoring (see ``pipeline``).
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
from modelyard.batch.sink import ChunkWriter, Sink
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
          key: str | None = None, chunk_size: int = 10_000, run_id: str | None = None,
          cluster: str | None = None, log_rows: bool = False, progress: ProgressFn | None = None,
          threads: int | None = 1, keep: tuple[str, ...] = ()) -> BatchResult:
    """Score ``source`` with model ``ref`` into ``target``; rerunning a ``run_id`` resumes it.

    ``threads`` caps the OpenMP threads of in-process predictions (None: the library's default). The
    output table holds the key under the ``key`` column's own name (``key`` without one) and the input
    columns named in ``keep``.
    """
    if chunk_size < 1:
        raise BatchError("--chunk-size must be at least 1")
    registry = Registry(settings)
    name, selector = parse_ref(ref)
    src = Source.parse(source)
    db_url = normalize_database_url(db or settings.resolved_database_url)
    run_id = run_id or new_run_id(name)
    previous = get_run(registry.engine, run_id)
    version = previous.version if previous else registry.resolve(ref).version
    run = open_run(registry.engine, run_id, model=name, version=version, source=src.value, target=target,
                   details={"db": redact(db_url), "key": key, "chunk_size": chunk_size, "cluster": cluster,
                            "source_kind": src.kind})
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
               progress=progress, threads=threads, member=member, keep=tuple(keep))
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
            if self.cluster:
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
            meta={"run_id": run.run_id, "cluster": self.cluster, "attempts": run.details.get("attempts")},
        )])
        return BatchResult(run.run_id, run.model, run.version, self.target, counts["scored"],
                           counts["rejected"], total, seconds, "done", resumed=run.resumed)
