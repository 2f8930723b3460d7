"""The prediction-log writer: records leave the request path at once and reach the database in batches.

``submit()`` only appends to an in-memory queue. A background thread takes batches of up to ``batch_size``
records every ``flush_interval`` seconds (sooner when a batch is full) and inserts them with
``insert_records`` (idempotent on request id and route). While the database cannot be reached, each batch is
appended to a spill segment (fsync'd JSON lines, see ``spill.py``) and the database is retried every
``retry_interval`` seconds; once it answers, every spill segment in the folder is drained into it, including
those a crashed process left behind. ``stop()`` flushes the queue to the database or, if it is down, to the
spill file: an answered prediction is never lost by a graceful stop or an outage.

A record the database refuses for its content (not for being unreachable) would block the log forever;
such records are isolated one by one and set aside in ``rejected-*.jsonl`` with a log line.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from modelyard.config import Settings
from modelyard.predlog import spill
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.store import insert_records
from modelyard.registry.db import Engine, is_content_error, log_engine, migrate

log = logging.getLogger("modelyard.predlog")
ORPHAN_SCAN_INTERVAL = 30.0  # seconds between looks for spill segments that no live writer holds


class PredictionLogWriter:
    """Batched, durable writes of prediction records. Thread-safe ``submit``; one writer thread."""

    def __init__(
        self,
        url: str,
        spill_dir: Path,
        *,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        retry_interval: float = 1.0,
        on_pending: Callable[[int], None] | None = None,
        on_spilled: Callable[[int], None] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.url = url
        self.spill_dir = Path(spill_dir)
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self._on_pending = on_pending
        self._on_spilled = on_spilled
        self._engine = engine
        self._owns_engine = engine is None  # made by _get_engine: closed by stop()
        self._migrated = False
        self._queue: deque[PredictionRecord] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._segment = spill.SpillSegment(self.spill_dir)
        self._spilled_pending = 0
        self._inflight = 0  # records taken from the queue and not yet in the database or the spill file
        self._db_down_since: float | None = None
        self._next_try = 0.0
        self._next_scan = time.monotonic() + ORPHAN_SCAN_INTERVAL
        self.written = 0  # records the database accepted (or already held), since start
        self.spilled = 0  # records written to spill segments, since start

    @classmethod
    def from_settings(cls, settings: Settings, **hooks: Any) -> PredictionLogWriter:
        return cls(settings.resolved_database_url, settings.resolved_spill_dir,
                   batch_size=settings.log_batch_size, flush_interval=settings.log_flush_interval, **hooks)

    # ---- the request side ----------------------------------------------------------------------------
    def submit(self, record: PredictionRecord) -> None:
        """Queue one record; never blocks on the database."""
        self._queue.append(record)
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def submit_many(self, records: Iterable[PredictionRecord]) -> None:
        for r in records:
            self.submit(r)

    @property
    def pending(self) -> int:
        """Records not yet in the database: queued in memory or waiting in spill segments."""
        return len(self._queue) + self._inflight + self._spilled_pending

    # ---- life cycle ----------------------------------------------------------------------------------
    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self._spilled_pending = spill.count_unheld(self.spill_dir)
            self._thread = threading.Thread(target=self._run, name="modelyard-predlog", daemon=True)
            self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is in the database (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending == 0:
                return True
            self._wake.set()
            time.sleep(0.02)
        return self.pending == 0

    def stop(self, timeout: float = 60.0) -> None:
        """Write out everything: to the database, or to the spill file when it is unreachable."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # stuck in the database: put what is still queued on disk
                leftovers = []
                while True:
                    try:
                        leftovers.append(self._queue.popleft())
                    except IndexError:  # empty (the stuck thread may be taking from it too)
                        break
                emergency = spill.SpillSegment(self.spill_dir)
                emergency.append(leftovers)
                emergency.close()
                log.error("prediction log: writer did not finish in %.0fs; %d queued records spilled to %s",
                          timeout, len(leftovers), self.spill_dir)
            self._thread = None
        else:  # never started: still make the queue durable
            self._final_flush()
        if self._owns_engine and self._engine is not None:
            self._engine.dispose()  # close the log's own pooled connections now, not when the GC gets to them
            self._engine = None
            self._migrated = False

    def __enter__(self) -> PredictionLogWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the writer thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._write_queue()
                now = time.monotonic()
                if self._db_down_since is None and now >= self._next_scan:
                    self._next_scan = now + ORPHAN_SCAN_INTERVAL  # segments other processes left behind
                    if not self._spilled_pending:
                        self._spilled_pending = spill.count_unheld(self.spill_dir)
                if self._spilled_pending and now >= self._next_try:
                    self._drain_segments()
            except Exception:  # the writer must survive anything; the records are in the queue or on disk
                log.exception("prediction log: unexpected error in the writer thread")
                time.sleep(self.flush_interval)
            self._report()
            if stopping:
                self._final_flush()
                self._report()
                return

    def _final_flush(self) -> None:
        try:
            self._write_queue()
            if self._spilled_pending and self._db_down_since is None:
                self._drain_segments()
        finally:
            leftovers = []
            while self._queue:
                leftovers.append(self._queue.popleft())
            if leftovers:
                self._spill(leftovers)
            self._segment.close()

    def _take(self) -> list[PredictionRecord]:
        batch: list[PredictionRecord] = []
        while self._queue and len(batch) < self.batch_size:
            batch.append(self._queue.popleft())
        return batch

    def _write_queue(self) -> None:
        while self._queue:
            self._inflight = min(len(self._queue), self.batch_size)  # counted before leaving the queue
            batch = self._take()
            self._inflight = len(batch)
            try:
                waiting = self._db_down_since is not None and time.monotonic() < self._next_try
                if waiting or not self._insert(batch):
                    self._spill(batch)
            finally:
                self._inflight = 0

    def _insert(self, batch: list[PredictionRecord]) -> bool:
        """Insert a batch; False when the database cannot be reached (the caller spills it)."""
        try:
            engine = self._get_engine()
            insert_records(engine, batch)
        except Exception as exc:
            if not is_content_error(exc):
                self._mark_down(exc)
                return False
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return True
            return all(self._insert([r]) for r in batch)
        self._mark_up()
        self.written += len(batch)
        return True

    def _get_engine(self) -> Engine:
        if self._engine is None:
            self._engine = log_engine(self.url)
        if not self._migrated:
            migrate(self._engine)
            self._migrated = True
        return self._engine

    def _mark_down(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._db_down_since is None:
            self._db_down_since = now
            log.warning("prediction log: database unreachable (%s); spilling records to %s",
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.spill_dir)
        self._next_try = now + self.retry_interval

    def _mark_up(self) -> None:
        if self._db_down_since is not None:
            log.warning("prediction log: database reachable again after %.1fs; draining the spill file",
                        time.monotonic() - self._db_down_since)
            self._db_down_since = None
            self._next_try = 0.0

    def _spill(self, batch: list[PredictionRecord]) -> None:
        self._segment.append(batch)
        self._spilled_pending += len(batch)
        self.spilled += len(batch)
        if self._on_spilled is not None:
            self._on_spilled(len(batch))

    def _drain_segments(self) -> None:
        """Move every unheld spill segment (ours and orphans) into the database."""
        self._segment.close()  # our own segment becomes drainable; the next spill opens a new one
        for path in spill.segments(self.spill_dir):
            with spill.claim(path) as mine:
                if not mine:
                    continue
                records = spill.read_records(path)
                for start in range(0, len(records), self.batch_size):
                    if not self._insert(records[start:start + self.batch_size]):
                        return  # down again: the segment stays, nothing is lost
                path.unlink(missing_ok=True)
                self._spilled_pending = max(0, self._spilled_pending - len(records))
                log.info("prediction log: drained %d records from %s", len(records), path.name)
        self._spilled_pending = 0  # segments other live processes hold are theirs to drain and count

    def _reject(self, record: PredictionRecord, exc: BaseException) -> None:
        path = self.spill_dir / f"rejected-{os.getpid()}.jsonl"
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(spill.dumps_record(record) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.error("prediction log: the database refused record %s (%s); kept in %s",
                  record.request_id, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, path)

    def _report(self) -> None:
        if self._on_pending is not None:
            try:
                self._on_pending(self.pending)
            except Exception:
                log.exception("prediction log: pending hook failed")


def record_to_json(record: PredictionRecord) -> str:
    """A record as one JSON text (what ``predictions show --json`` prints)."""
    return spill.dumps_record(record).decode()
