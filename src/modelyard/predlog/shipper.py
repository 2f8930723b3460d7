"""The shipper: moves write-ahead segments nobody holds into the log store, in batches, then deletes them.

The log store is a ``LogSink`` (``store.py``): the registry's table (``SqlSink``, the default) or Parquet
files (``parquet.ParquetSink``, ``MODELYARD_LOG_TARGET=parquet``). A segment is claimed (``flock``) before it
is read, written with the sink (idempotent: the table ignores a (request id, route) it holds; a Parquet part
file is named after its segment and replaced whole), and deleted only once all of it is in. So a segment
shipped again after a crash mid-way, or one holding the same request id twice, adds nothing twice. While
the store cannot be reached the segments stay where they are and the shipper retries every
``retry_interval`` seconds. A record the store refuses for its content (not for being unreachable) would
block the log forever: the write is halved until such records are alone, and they are set aside in
``rejected-<pid>.jsonl`` with a log line. After each pass the sink does its housekeeping (``maintain``:
Parquet retention).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from modelyard._gc import settle_heap
from modelyard._pipes import frame, read_frame
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
            half = len(batch) // 2  # halved until the refused records are alone: a few writes, not one a record
            return (self._insert(f"{segment_id}.0", batch[:half])
                    and self._insert(f"{segment_id}.1", batch[half:]))
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
            fh.write(segments.dumps_record(record, line=True))
            fh.flush()
            os.fsync(fh.fileno())
        log.error("prediction log: the %s refused record %s (%s); kept in %s", self.sink.name,
                  record.request_id, _first_line(exc), path)

    def dispose(self) -> None:
        self.sink.dispose()


SHIPPER = """
import os, sys
events = os.fdopen(os.dup(1), "wb", buffering=0)
os.dup2(2, 1)  # whatever a library prints goes to stderr, never among the events
from modelyard.predlog.shipper import ship_in_child
ship_in_child(int(sys.argv[1]), sys.argv[2] == "1", events)
"""
"""The shipping child's program (``python -c SHIPPER PARENT_PID DIE_WITH_IT``): its ``Shipper`` comes pickled on
stdin (with its interval), then one byte at a time: ``s`` ships now, ``q`` ships a last time and exits. The end of
stdin without ``q`` (the parent died) ends it at once: the segments wait for the next shipper, as they
would had the shipper been a thread of the dead process. On stdout it reports what the shipping hooks would
have been told, one line each: ``e`` the store could not be reached, ``p<n>`` n records wait for it."""


def ship_in_child(parent: int, die_with_it: bool, events: BinaryIO | None = None) -> None:
    """``SHIPPER``'s loop: ship every ``interval`` seconds, or when asked, until told to stop; the hooks'
    events written to ``events`` for the parent (``ShipperProcess``)."""
    import select

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if die_with_it:
        _die_with(parent)
    stdin = sys.stdin.buffer
    data = read_frame(stdin)
    if data is None:
        return  # the parent died before it sent the shipper
    shipper, interval = pickle.loads(data)
    if events is not None:
        shipper._on_error = lambda: _emit(events, b"e\n")
        shipper._on_spilled = lambda n: _emit(events, b"p%d\n" % n)
    settle_heap(batches=True)
    try:
        while True:
            ready, _, _ = select.select([stdin], [], [], interval)
            command = os.read(stdin.fileno(), 1) if ready else b"s"
            if not command or os.getppid() != parent:
                return  # the parent is gone without asking for a last pass
            if not shipper.waiting or command == b"q":
                shipper.ship_folder()
            if command == b"q":
                return
    finally:
        shipper.dispose()


def _emit(events: BinaryIO, line: bytes) -> None:
    with contextlib.suppress(OSError, ValueError):  # a parent gone, or stopped reading: nobody to tell
        events.write(line)


def _die_with(parent: int) -> None:
    """Linux: the kernel kills this process when its parent dies, even mid-pass (elsewhere, or when the
    parent started it from another thread than its main one, whose end would count as the parent's death:
    the end of stdin, seen between two passes)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


class ShipperProcess:
    """A ``Shipper`` run by a child interpreter (``SHIPPER``): for a process whose own interpreter is its hot
    path (the stream consumer), so that the log store's inserts (a fifth of its CPU) run on another core.

    The child ships every ``interval`` seconds what nobody holds, as the writer's tick would; the writer
    only rotates. ``shipper`` is pickled to it (a sink built from settings, without an engine). Records the
    store accepted are counted in the child, not in this process's ``Shipper``; what the shipping hooks
    would be told there (``on_error``, ``on_spilled``) comes back on the child's stdout and is passed to them
    here, from a thread of this process.
    """

    def __init__(self, shipper: Shipper, interval: float, *, on_error: Callable[[], None] | None = None,
                 on_spilled: Callable[[int], None] | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        main = "1" if threading.current_thread() is threading.main_thread() else "0"
        self._proc = subprocess.Popen([sys.executable, "-c", SHIPPER, str(os.getpid()), main], env=env,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._lock = threading.Lock()
        self.folder = shipper.folder
        self._on_error, self._on_spilled = on_error, on_spilled
        self._events = threading.Thread(target=self._read_events, name="modelyard-predlog-events", daemon=True)
        self._events.start()
        data = pickle.dumps((shipper, interval), protocol=pickle.HIGHEST_PROTOCOL)
        self._send(frame(data))

    def _read_events(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        for line in stdout:  # until the child exits
            try:
                if line == b"e\n":
                    if self._on_error is not None:
                        self._on_error()
                elif line.startswith(b"p") and self._on_spilled is not None:
                    self._on_spilled(int(line[1:]))
            except Exception:  # a hook's failure never stops the reading
                log.exception("prediction log: a shipping hook failed")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, data: bytes) -> bool:
        with self._lock:
            stdin = self._proc.stdin
            if stdin is None or stdin.closed:
                return False
            try:
                stdin.write(data)
                stdin.flush()
            except (BrokenPipeError, ValueError):
                return False
            return True

    def ship_now(self) -> None:
        self._send(b"s")

    def stop(self, timeout: float = 60.0) -> None:
        """Ship a last time (what nobody holds now: call it after the writer closed its segment) and wait."""
        asked = self._send(b"q")
        with self._lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.close()
        try:
            self._proc.wait(timeout if asked else 5.0)
        except subprocess.TimeoutExpired:
            log.error("prediction log: the shipping process did not finish in %.0fs; the rest waits in %s",
                      timeout, self.folder)
            self._proc.kill()
            self._proc.wait()
        self._events.join(5.0)  # the child's last events passed on before this returns
        if self._proc.stdout is not None:
            self._proc.stdout.close()
