"""The shipper: moves write-ahead segments nobody holds into the log store, in batches, then deletes them.

The log store is a ``LogSink`` (``store.py``): the registry's table (``SqlSink``, the default) or Parquet
files (``parquet.ParquetSink``, ``MODELYARD_LOG_TARGET=parquet``). A segment is claimed (``flock``) before it
is read, written with the sink (idempotent: the table ignores a (request id, route) it holds; a Parquet part
file is named after its segment and replaced whole), and deleted only once all of it is in. So a segment
shipped again after a crash mid-way, or one holding the same request id twice, adds nothing twice. While
the store cannot be reached the segments stay where they are and the shipper retries every
``retry_interval`` seconds. A record the store refuses for its content (not for being unreachable) would
block the log forever: such records are isolated one by one and set aside in ``rejected-<pid>.jsonl`` with a
log line. After each pass the sink does its housekeeping (``maintain``: Parquet retention).
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from modelyard.predlog import segments
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.store import LogSink, SqlSink
from modelyard.registry.db import Engine

log = logging.getLogger("modelyard.predlog")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Shipper:
    """Ships segments from ``folder`` into ``sink`` (by default the database at ``url``). One thread calls it
    at a time."""

    def __init__(self, url: str, folder: Path, *, batch_size: int = 500, retry_interval: float = 1.0,
                 engine: Engine | None = None, on_error: Callable[[], None] | None = None,
                 on_spilled: Callable[[int], None] | None = None, sink: LogSink | None = None) -> None:
        self.url = url
        self.folder = Path(folder)
        self.sink: LogSink = sink or SqlSink(url, batch_size=batch_size, engine=engine)
        self.retry_interval = retry_interval
        self._on_error = on_error
        self._on_spilled = on_spilled
        self._held_back: set[Path] = set()  # segments that waited for the database (counted once)
        self.spilled = 0  # records that had to wait in segments because the store was away
        self.down_since: float | None = None
        self.next_try = 0.0
        self.last_error: str | None = None
        self.shipped = 0  # records the store accepted (or already held), since start
        self._error_cleared = False

    @property
    def waiting(self) -> bool:
        """True while the store is away and the next retry is not due yet."""
        return self.down_since is not None and time.monotonic() < self.next_try

    def ship_folder(self, known: dict[Path, list[PredictionRecord]] | None = None) -> int:
        """Ship every segment nobody holds (``known`` gives the records of segments this process wrote,
        which are then not read back). Returns the records shipped; stops at the first unreachable moment."""
        total = 0
        for path in segments.segments(self.folder):
            if self.waiting:
                break
            with segments.claim(path) as mine:
                if not mine:
                    continue
                records = (known or {}).pop(path, None)
                if records is None:
                    records = segments.read_records(path)
                if not self.insert(records, segment_id=path.stem):
                    if known is not None:
                        known[path] = records
                    if path not in self._held_back:
                        self._held_back.add(path)
                        self.spilled += len(records)
                        if self._on_spilled is not None:
                            self._on_spilled(len(records))
                    break  # down: the segment stays, nothing is lost
                path.unlink(missing_ok=True)
                self._held_back.discard(path)
                total += len(records)
                log.debug("prediction log: shipped %d records from %s", len(records), path.name)
        self._maintain()
        return total

    def insert(self, records: Sequence[PredictionRecord], segment_id: str | None = None) -> bool:
        """Write in the sink's batches; False when the store cannot be reached (the caller keeps the
        records). ``segment_id`` names the segment they come from (records from memory get a fresh one)."""
        sid = segment_id or f"mem-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        size = self.sink.batch_size or max(1, len(records))
        return all(self._insert(sid, list(records[start:start + size])) for start in range(0, len(records), size))

    def _insert(self, segment_id: str, batch: list[PredictionRecord]) -> bool:
        try:
            self.sink.write(segment_id, batch)
        except Exception as exc:
            if not self.sink.is_content_error(exc):
                self._mark_down(exc)
                return False
            if len(batch) == 1:
                self._reject(batch[0], exc)
                return True
            return all(self._insert(f"{segment_id}.{i}", [r]) for i, r in enumerate(batch))
        self._mark_up()
        self.shipped += len(batch)
        return True

    def _maintain(self) -> None:
        try:
            self.sink.maintain()
        except Exception:  # housekeeping never stops the shipping
            log.exception("prediction log: housekeeping of the %s failed", self.sink.name)

    def _mark_down(self, exc: Exception) -> None:
        now = time.monotonic()
        self.last_error = _first_line(exc)
        if self.down_since is None:
            self.down_since = now
            log.warning("prediction log: %s unreachable (%s); records wait in %s", self.sink.name,
                        self.last_error, self.folder)
        segments.write_ship_error(self.folder, self.last_error)
        self._error_cleared = False
        if self._on_error is not None:
            self._on_error()
        self.next_try = now + self.retry_interval

    def _mark_up(self) -> None:
        if not self._error_cleared:  # an error another process left behind is stale once a ship works
            self._error_cleared = True
            segments.clear_ship_error(self.folder)
        if self.down_since is not None:
            log.warning("prediction log: %s reachable again after %.1fs; shipping the waiting segments",
                        self.sink.name, time.monotonic() - self.down_since)
            self.down_since = None
            self.next_try = 0.0
            segments.clear_ship_error(self.folder)

    def _reject(self, record: PredictionRecord, exc: BaseException) -> None:
        path = self.folder / f"rejected-{os.getpid()}.jsonl"
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(segments.dumps_record(record) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        log.error("prediction log: the %s refused record %s (%s); kept in %s", self.sink.name,
                  record.request_id, _first_line(exc), path)

    def dispose(self) -> None:
        self.sink.dispose()
