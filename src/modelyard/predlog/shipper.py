"""The shipper: moves write-ahead segments nobody holds into the database, in batches, then deletes them.

A segment is claimed (``flock``) before it is read, inserted batch by batch with ``insert_records``
(idempotent on request id and route, so a segment shipped again after a crash mid-way, or one holding the
same request id twice, adds nothing twice) and deleted only once every batch is in. While the database
cannot be reached the segments stay where they are and the shipper retries every ``retry_interval``
seconds. A record the database refuses for its content (not for being unreachable) would block the log
forever: such records are isolated one by one and set aside in ``rejected-<pid>.jsonl`` with a log line.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelyard.predlog import segments
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.store import insert_records  # the one seam to the log store
from modelyard.registry.db import Engine, is_content_error, log_engine, migrate

log = logging.getLogger("modelyard.predlog")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class Shipper:
    """Ships segments from ``folder`` into the database at ``url``. One thread calls it at a time."""

    def __init__(self, url: str, folder: Path, *, batch_size: int = 500, retry_interval: float = 1.0,
                 engine: Engine | None = None, on_error: Callable[[], None] | None = None,
                 on_spilled: Callable[[int], None] | None = None) -> None:
        self.url = url
        self.folder = Path(folder)
        self.batch_size = max(1, batch_size)
        self.retry_interval = retry_interval
        self._engine = engine
        self._migrated = False
        self._on_error = on_error
        self._on_spilled = on_spilled
        self._held_back: set[Path] = set()  # segments that waited for the database (counted once)
        self.spilled = 0  # records that had to wait in segments because the database was away
        self.down_since: float | None = None
        self.next_try = 0.0
        self.last_error: str | None = None
        self.shipped = 0  # records the database accepted (or already held), since start
        self._error_cleared = False

    @property
    def waiting(self) -> bool:
        """True while the database is away and the next retry is not due yet."""
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
                if not self.insert(records):
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
        return total

    def insert(self, records: Sequence[PredictionRecord]) -> bool:
        """Insert in batches; False when the database cannot be reached (the caller keeps the records)."""
        for start in range(0, len(records), self.batch_size):
            if not self._insert(list(records[start:start + self.batch_size])):
                return False
        return True

    def _insert(self, batch: list[PredictionRecord]) -> bool:
        try:  # connecting and migrating: any failure here is the database's, never the records'
            engine = self._get_engine()
        except Exception as exc:  # (two processes migrating at once raise IntegrityError: not poison)
            self._mark_down(exc)
            return False
        try:
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
        self.shipped += len(batch)
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
        self.last_error = _first_line(exc)
        if self.down_since is None:
            self.down_since = now
            log.warning("prediction log: database unreachable (%s); records wait in %s", self.last_error,
                        self.folder)
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
            log.warning("prediction log: database reachable again after %.1fs; shipping the waiting "
                        "segments", time.monotonic() - self.down_since)
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
        log.error("prediction log: the database refused record %s (%s); kept in %s",
                  record.request_id, _first_line(exc), path)

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
