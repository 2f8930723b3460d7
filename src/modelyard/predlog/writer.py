"""The prediction-log writer: every record is written ahead to a local segment before its answer leaves.

Durability (``MODELYARD_LOG_DURABILITY``, see ``Durability``):

- ``process`` (default): ``commit()`` returns once the records are in the segment (``write(2)``: the page
  cache). The answer can leave; a SIGKILL, an OOM kill or any crash of the process loses nothing.
- ``machine``: as ``process`` plus ``fdatasync`` before ``commit()`` returns: survives power loss.
- ``async``: records wait in memory and reach the segment at the next tick. Lossy: a crash loses up to
  ``flush_interval`` seconds of answered predictions (the behaviour of earlier versions).

Group commit: the records of every request that commits during one event-loop iteration go to the segment
in one ``os.write`` (``process``); in ``machine`` one thread writes and fdatasyncs each group while the next
one gathers, so one fdatasync covers every request that arrived meanwhile. A background thread (the
shipper tick, every ``flush_interval`` seconds) rotates the segment, ships every segment nobody holds (ours,
and any a dead process left) into the log store (the database, or Parquet files: ``MODELYARD_LOG_TARGET``)
and deletes it (``shipper.py``), and refreshes the backlog. With ``ship_in_child`` the tick only rotates:
a child interpreter ships (``shipper.ShipperProcess``), so that the store's inserts do not take this
interpreter's time (the stream consumer, whose one interpreter is its hot path; a server with a core to
spare, ``MODELYARD_LOG_SHIP_IN_CHILD``); the shipping hooks (``on_ship_error``, ``on_spilled``) are told
what the child reports, and ``modelyard log status`` shows the child's errors.

When the segment cannot be written (disk full, unwritable folder) ``commit()`` raises
``LogUnavailableError`` (a 503 with ``Retry-After``) and ``healthy`` turns False until a write works again
(the tick probes). With ``on_failure="serve"`` the records are kept in memory instead (shipped straight to
the database) and a warning is logged on every failure: the answer leaves, but it is no longer durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from modelyard.config import Settings
from modelyard.errors import LogUnavailableError
from modelyard.predlog import segments
from modelyard.predlog.commit import Group, Syncer, settle
from modelyard.predlog.records import PredictionRecord
from modelyard.predlog.shipper import Shipper, ShipperProcess
from modelyard.predlog.store import LogSink
from modelyard.predlog.target import log_sink
from modelyard.registry.db import Engine, log_engine

__all__ = ["Durability", "LogHooks", "PredictionLogWriter", "log_engine", "record_to_json"]

log = logging.getLogger("modelyard.predlog")
MEMORY_COPY_LIMIT = 200_000  # records of our own segments kept in memory to ship without reading them back


class Durability(StrEnum):
    PROCESS = "process"
    MACHINE = "machine"
    ASYNC = "async"


@dataclass
class LogHooks:
    """Callbacks for metrics (the writer knows nothing of Prometheus)."""

    on_pending: Callable[[int], None] | None = None
    on_backlog: Callable[[segments.Backlog], None] | None = None
    on_write_failure: Callable[[], None] | None = None
    on_ship_error: Callable[[], None] | None = None
    on_served_unlogged: Callable[[int], None] | None = None
    on_spilled: Callable[[int], None] | None = None  # records that waited for an unreachable database


class PredictionLogWriter:
    """Write-ahead prediction log of one process. ``commit`` (async) and ``commit_sync`` are durable at the
    configured level; ``submit`` is fire-and-forget (shadow records, after the answer)."""

    def __init__(
        self,
        url: str,
        spill_dir: Path,
        *,
        durability: Durability | str = Durability.PROCESS,
        on_failure: str = "refuse",
        batch_size: int = 500,
        flush_interval: float = 0.5,
        retry_interval: float = 1.0,
        retry_after: int = 5,
        hooks: LogHooks | None = None,
        engine: Engine | None = None,
        sink: LogSink | None = None,
        ship_in_child: bool = False,
    ) -> None:
        self.url = url
        self.folder = self.spill_dir = Path(spill_dir)
        self.durability = Durability(durability)
        self.refuse = on_failure != "serve"
        self.flush_interval = flush_interval
        self.retry_after = retry_after
        self.hooks = hooks or LogHooks()
        self.shipper = Shipper(url, self.folder, batch_size=batch_size, retry_interval=retry_interval,
                               engine=engine, on_error=self.hooks.on_ship_error,
                               on_spilled=self.hooks.on_spilled, sink=sink)
        if ship_in_child and engine is not None:
            raise ValueError("ship_in_child needs a sink the child can build (a url or a sink), not an engine")
        self.ship_in_child = ship_in_child
        self._ship_child: ShipperProcess | None = None
        self._lock = threading.Lock()  # the segment and the bookkeeping below
        self._segment = segments.Segment(self.folder)
        self._open_records: list[PredictionRecord] = []  # what the open segment holds
        self._known: dict[Path, list[PredictionRecord]] = {}  # our rotated, unshipped segments
        self._unshipped = 0  # records of ours written to segments and not yet shipped
        self._orphans = 0  # records in segments left by others, counted at start
        self._queue: deque[PredictionRecord] = deque()  # async durability, shadow records, failures
        self._groups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Group] = weakref.WeakKeyDictionary()
        self._syncer: Syncer | None = None
        if self.durability is Durability.MACHINE:
            self._syncer = Syncer(lambda data, records: self._write_or_fail(data, records, sync=True))
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._scanner = segments.BacklogScanner(self.folder)
        self.failing: str | None = None  # why the segment cannot be written, while it cannot
        self.write_failures = 0
        self.written = 0  # records written to segments since start
        self.served_unlogged = 0  # records answered while the segment could not be written (serve mode)
        self.group_writes = 0  # event-loop groups written (each one os.write for every request in it)

    @classmethod
    def from_settings(cls, settings: Settings, hooks: LogHooks | None = None, *,
                      ship_in_child: bool = False) -> PredictionLogWriter:
        return cls(settings.resolved_database_url, settings.resolved_spill_dir,
                   durability=settings.log_durability, on_failure=settings.log_on_failure,
                   batch_size=settings.log_batch_size, flush_interval=settings.log_flush_interval,
                   hooks=hooks, sink=log_sink(settings), ship_in_child=ship_in_child)

    # ---- the request side ----------------------------------------------------------------------------
    async def commit(self, records: Sequence[PredictionRecord], *, alone: bool = False) -> None:
        """Return once ``records`` are durable at the writer's level; ``LogUnavailableError`` when the
        segment cannot be written (and failures are refused). ``alone``: no other request is in progress
        (nothing would share the group's write): at ``process`` durability the records are written at once,
        without waiting for the end of the loop's turn."""
        if not records:
            return
        if self.durability is Durability.ASYNC:
            self.submit_many(records)
            return
        if alone and self._syncer is None:
            error = self._write_or_fail(segments.encode(records), list(records), sync=False)
            if error is not None:
                raise error
            return
        loop = asyncio.get_running_loop()
        group = self._groups.get(loop)
        if group is None:
            group = self._groups[loop] = Group()
            loop.call_soon(self._commit_group, loop)
        waiter: asyncio.Future[None] = loop.create_future()
        group.data.append(segments.encode(records))
        group.records.extend(records)
        group.waiters.append(waiter)
        await waiter

    def _commit_group(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._groups.pop(loop)
        self.group_writes += 1
        if self._syncer is not None:
            self._syncer.put(loop, group)
            return
        try:
            error = self._write_or_fail(b"".join(group.data), group.records, sync=False)
        except Exception as exc:  # never leave a request waiting
            log.exception("prediction log: writing a group failed unexpectedly")
            error = exc
        settle(group.waiters, error)

    def commit_sync(self, records: Sequence[PredictionRecord]) -> None:
        """``commit`` for threads (batch scoring): blocks until the records are durable."""
        if not records:
            return
        if self.durability is Durability.ASYNC:
            self.submit_many(records)
            return
        error = self._write_or_fail(segments.encode(records), list(records),
                                    sync=self.durability is Durability.MACHINE)
        if error is not None:
            raise error

    def submit(self, record: PredictionRecord) -> None:
        """Fire-and-forget: queued in memory, written ahead at the next tick (lossy in a crash)."""
        self._queue.append(record)

    def submit_many(self, records: Iterable[PredictionRecord]) -> None:
        self._queue.extend(records)

    def _write_or_fail(self, data: bytes, records: list[PredictionRecord], *, sync: bool) -> Exception | None:
        """Write to the segment; on failure count it and return the error to raise (None: served anyway)."""
        try:
            self._write(data, records, sync=sync)
        except OSError as exc:
            return self._failed(exc, records)
        return None

    def _write(self, data: bytes, records: list[PredictionRecord], *, sync: bool) -> None:
        with self._lock:
            self._segment.append(data, len(records), sync=sync)
            self._open_records.extend(records)
            self._unshipped += len(records)
            self.written += len(records)
        if self.failing is not None:
            log.warning("prediction log: the segment folder %s is writable again", self.folder)
            self.failing = None

    def _failed(self, exc: OSError, records: list[PredictionRecord]) -> Exception | None:
        with self._lock:  # close the segment the write failed in: its whole records can be shipped
            self._rotate_locked()
        self.write_failures += 1
        reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        if self.hooks.on_write_failure is not None:
            self.hooks.on_write_failure()
        if self.refuse:
            if self.failing is None:
                log.error("prediction log: cannot write to %s (%s); refusing predictions (503) until it "
                          "can (MODELYARD_LOG_ON_FAILURE=serve answers them unlogged)", self.folder, reason)
            self.failing = reason
            return LogUnavailableError(f"the prediction log cannot be written ({reason}); retry shortly",
                                       retry_after=self.retry_after)
        self.failing = reason
        self.served_unlogged += len(records)
        if self.hooks.on_served_unlogged is not None:
            self.hooks.on_served_unlogged(len(records))
        log.warning("prediction log: cannot write to %s (%s); %d records answered without a durable log "
                    "(MODELYARD_LOG_ON_FAILURE=serve), kept in memory for the database", self.folder, reason,
                    len(records))
        self._queue.extend(records)
        return None

    @property
    def spilled(self) -> int:
        """Records that had to wait in segments because the database was unreachable."""
        return self.shipper.spilled

    @property
    def healthy(self) -> bool:
        """False while the log cannot be written and requests are refused (``/readyz`` turns unready)."""
        return self.failing is None or not self.refuse

    @property
    def pending(self) -> int:
        """Records not yet in the database: in memory, in our segments, in segments others left."""
        return len(self._queue) + self._unshipped + self._orphans

    # ---- life cycle ----------------------------------------------------------------------------------
    def start(self) -> PredictionLogWriter:
        if self._thread is None:
            self._orphans = segments.count_unheld(self.folder)
            if self._syncer is not None:
                self._syncer.start()
            if self.ship_in_child:
                self._ship_child = ShipperProcess(
                    Shipper(self.url, self.folder, batch_size=self.shipper.sink.batch_size or 500,
                            retry_interval=self.shipper.retry_interval, sink=self.shipper.sink),
                    self.flush_interval, on_error=self.hooks.on_ship_error, on_spilled=self._child_spilled)
            self._thread = threading.Thread(target=self._run, name="modelyard-predlog", daemon=True)
            self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything written so far is in the database (True) or the timeout passed (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pending == 0:
                return True
            self._wake.set()
            if self._ship_child is not None:
                self._ship_child.ship_now()
            time.sleep(0.02)
        return self.pending == 0

    def stop(self, timeout: float = 60.0) -> None:
        """Ship what can be shipped; whatever the database cannot take now stays in segments on disk."""
        self._stopping = True
        self._wake.set()
        if self._syncer is not None:
            self._syncer.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("prediction log: the shipper did not finish in %.0fs; the rest waits in %s",
                          timeout, self.folder)
            self._thread = None
        else:
            self._tick(final=True)
        with self._lock:  # a stuck shipper: what is still in memory goes to disk at least
            leftovers = list(self._queue)
            self._queue.clear()
            if leftovers:
                with contextlib.suppress(OSError):
                    self._segment.append(segments.encode(leftovers), len(leftovers), sync=True)
            self._rotate_locked()
        if self._ship_child is not None:  # the last pass, once every segment of ours is closed
            self._ship_child.stop(timeout)
            self._ship_child = None
        self.shipper.dispose()

    def __enter__(self) -> PredictionLogWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the background tick -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._tick(final=stopping)
            except Exception:  # the tick must survive anything; the records are on disk or in memory
                log.exception("prediction log: unexpected error in the shipper thread")
                time.sleep(self.flush_interval)
            if stopping:
                return

    def _tick(self, *, final: bool = False) -> None:
        self._write_queue()
        if self.failing is not None and self.refuse:
            self._probe()
        with self._lock:
            if self._segment.is_open and (final or time.monotonic() - self._segment.opened_at
                                          >= self.flush_interval):
                self._rotate_locked()
            known = self._known
        before = self.shipper.shipped
        if self._ship_child is None and not self.shipper.waiting:
            self.shipper.ship_folder(known)
        shipped = self.shipper.shipped - before
        # segments others left, still there (the child ships them): counted while there are any
        unheld = segments.count_unheld(self.folder) if self._ship_child is not None and self._orphans else None
        with self._lock:
            for path in [p for p in self._known if not p.exists()]:  # shipped by another process
                del self._known[path]
            mine = sum(len(v) for v in self._known.values()) + len(self._open_records)
            if unheld is not None:
                self._orphans = max(0, unheld - (mine - len(self._open_records)))
            ours_shipped = self._unshipped - mine
            self._orphans = max(0, self._orphans - max(0, shipped - ours_shipped))
            if self._ship_child is None and self.shipper.down_since is None:  # every unheld segment went: the
                # rest belong to live writers
                self._orphans = 0
            if mine > MEMORY_COPY_LIMIT:  # a long outage: read them back from disk when it ends
                self._orphans += mine - len(self._open_records)
                self._known.clear()
                mine = len(self._open_records)
            self._unshipped = mine
        self._report()

    def _write_queue(self) -> None:
        """Records in memory (async durability, shadow, served while failing) to the segment, or straight
        to the database while the segment cannot be written."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), 5000))]
            try:
                self._write(segments.encode(batch), batch, sync=self.durability is Durability.MACHINE)
            except OSError as exc:
                with self._lock:
                    self._rotate_locked()
                if self.failing is None:
                    self.failing = f"{type(exc).__name__}: {exc.strerror or exc}"
                if self.shipper.waiting or not self.shipper.insert(batch):
                    self._queue.extendleft(reversed(batch))
                    return

    def _probe(self) -> None:
        """While refusing: is the folder writable again? (an empty line: readers skip it)."""
        try:
            self._write(b"\n", [], sync=False)
        except OSError:
            with self._lock:
                self._rotate_locked()

    def _child_spilled(self, n: int) -> None:
        """The shipping child held ``n`` records back: counted as this process's shipper counts its own."""
        self.shipper.spilled += n
        if self.hooks.on_spilled is not None:
            self.hooks.on_spilled(n)

    def _rotate_locked(self) -> None:
        path = self._segment.close()
        if path is not None:
            self._known[path] = self._open_records
        self._open_records = []

    def _report(self) -> None:
        try:
            if self.hooks.on_pending is not None:
                self.hooks.on_pending(self.pending)
            if self.hooks.on_backlog is not None:
                self.hooks.on_backlog(self._scanner.scan())
        except Exception:
            log.exception("prediction log: metrics hook failed")


def record_to_json(record: PredictionRecord) -> str:
    """A record as one JSON text (what ``predictions show --json`` prints)."""
    return segments.dumps_record(record).decode()
