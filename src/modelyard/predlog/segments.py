"""Write-ahead segments: the local, append-only files every prediction record is written to before its answer.

A segment is a file of JSON lines (``wal-<pid>-<n>-<random>.jsonl``), one record a line. The process that
appends to a segment holds an exclusive ``flock`` on it while it is open (taken before the file has its
listed name); a segment nobody holds (rotated by
its writer, or left by a process that died: the kernel drops a dead process's locks) can be claimed and
shipped by any process sharing the folder. Shipping is safe to repeat: the store ignores records it already
holds (idempotent on request id and route), so a segment shipped twice, or in part and then again, never
produces a second row. A torn last line (a crash mid-write) is skipped; a failed write is truncated back
and its segment closed, so the next write never glues a record to a half line.

Files named ``spill-*.jsonl`` (the spill files of earlier versions) are read and shipped the same way.
``last-ship-error.json`` holds the shipper's latest failure (removed once a ship succeeds), so that
``modelyard log status`` in another process can show it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from modelyard.predlog.records import PredictionRecord

log = logging.getLogger("modelyard.predlog")
PREFIX = "wal-"
PREFIXES = (PREFIX, "spill-")
SUFFIX = ".jsonl"
SHIP_ERROR_FILE = "last-ship-error.json"


_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_LINE = _OPTIONS | orjson.OPT_APPEND_NEWLINE


def dumps_record(record: PredictionRecord, *, line: bool = False) -> bytes:
    """One JSON line: ``PredictionRecord.to_json`` (its fields in order, ``ts`` in ISO 8601); NaN and
    infinities become null (JSON has neither); with ``line``, ended by a newline (orjson appends it). orjson
    writes the dataclass itself, at less than half the cost (it was most of the stream consumer's log cost),
    whenever its text of ``ts`` is ``isoformat``'s: always, but for a UTC offset that is not whole minutes
    (orjson drops its seconds)."""
    option = _LINE if line else _OPTIONS
    offset = record.ts.utcoffset()
    if offset is None or (offset.seconds % 60 == 0 and not offset.microseconds):
        return orjson.dumps(record, option=option, default=str)
    return orjson.dumps(record.to_json(), option=option, default=str)


def encode(records: Sequence[PredictionRecord]) -> bytes:
    """The records as segment lines."""
    return b"".join([dumps_record(r, line=True) for r in records])


def read_records(path: Path) -> list[PredictionRecord]:
    """Every whole record of a segment; a torn last line (a crash mid-write) is skipped with a warning."""
    records: list[PredictionRecord] = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(PredictionRecord.from_json(orjson.loads(line)))
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                log.warning("segment %s line %d is not a whole record (%s): skipped", path.name, n, exc)
    return records


class Segment:
    """The segment one writer appends to; opened on the first write, locked while open.

    Not thread-safe on its own: the writer serializes calls. ``append`` either writes every byte or raises
    ``OSError`` having cut the segment back to its last whole record (the caller then closes it).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self.records = 0
        self.size = 0
        self.opened_at = 0.0
        self._fd: int | None = None
        self._serial = 0

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    def append(self, data: bytes, n_records: int, *, sync: bool = False) -> None:
        """Write ``data`` (whole lines) and, with ``sync``, fdatasync it before returning."""
        if self._fd is None:
            self._open()
        assert self._fd is not None
        try:
            written = os.write(self._fd, data)
            if written < len(data):  # a short write (a signal, a nearly full disk): the rest as it goes
                view = memoryview(data)[written:]
                while view:
                    view = view[os.write(self._fd, view):]
            if sync:
                os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)  # no half line stays for the next record to join
            raise
        self.size += len(data)
        self.records += n_records

    def sync(self) -> None:
        if self._fd is not None:
            os.fdatasync(self._fd)

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        path = self.folder / f"{PREFIX}{os.getpid()}-{self._serial}-{os.urandom(3).hex()}{SUFFIX}"
        # created under a name ``segments`` does not list, locked, then renamed: under its own name from the
        # first instant, another process's shipper could claim it before the lock, ship it empty and unlink
        # it, and every record written after would go to a file nobody can find
        hidden = path.with_name("." + path.name)
        fd = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(hidden, path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                hidden.unlink()
            raise
        self._fd, self.path = fd, path
        self.records = self.size = 0
        self.opened_at = time.monotonic()

    def close(self) -> Path | None:
        """Release the segment so it can be shipped; its path (None when nothing was open). An empty
        segment is removed."""
        if self._fd is None:
            return None
        fd, self._fd = self._fd, None
        path, self.path = self.path, None
        if not self.size and path is not None:
            path.unlink(missing_ok=True)
            path = None
        os.close(fd)  # closing the descriptor releases the lock
        return path


def segments(folder: Path) -> list[Path]:
    """Every segment file in ``folder``, oldest name first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIXES) and p.name.endswith(SUFFIX))


def _try_lock(path: Path) -> int | None:
    """An open, exclusively locked descriptor of ``path``; None when it is gone or someone holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    if not path.exists():  # shipped and removed by another process while we waited
        os.close(fd)
        return None
    return fd


@contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Lock a segment for shipping; yields False when another process holds it (or it is gone)."""
    fd = _try_lock(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def count_records(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def count_unheld(folder: Path) -> int:
    """Records waiting in segments no live writer holds (what a shipper can take now)."""
    total = 0
    for path in segments(folder):
        with claim(path) as mine:
            if mine:
                total += count_records(path)
    return total


def _first_ts(path: Path) -> datetime | None:
    try:
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    ts = orjson.loads(line).get("ts")
                    return datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except (OSError, orjson.JSONDecodeError, ValueError, AttributeError):
        return None
    return None


@dataclass
class Backlog:
    """What waits in a segment folder for the database."""

    folder: str
    segments: int
    records: int
    oldest_age_seconds: float | None
    last_ship_error: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "segments": self.segments, "records": self.records,
                "oldest_age_seconds": self.oldest_age_seconds, "last_ship_error": self.last_ship_error}


class BacklogScanner:
    """``backlog()`` of one folder, read incrementally: a segment's records are counted once, and only the
    bytes appended since the last scan are read (the metrics scan every shipper tick)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._seen: dict[Path, tuple[int, int, datetime | None]] = {}  # path -> (bytes read, records, ts)

    def scan(self) -> Backlog:
        paths = segments(self.folder)
        seen: dict[Path, tuple[int, int, datetime | None]] = {}
        records = 0
        oldest: datetime | None = None
        for path in paths:
            size, count, first = self._seen.get(path, (0, 0, None))
            try:
                with open(path, "rb") as fh:
                    fh.seek(size)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            whole = chunk[:chunk.rfind(b"\n") + 1]  # a line being written is counted next time
            count += sum(1 for line in whole.split(b"\n") if line.strip())
            size += len(whole)
            if first is None and count:
                first = _first_ts(path)
            seen[path] = (size, count, first)
            records += count
            if first is not None and (oldest is None or first < oldest):
                oldest = first
        self._seen = seen
        age = max(0.0, (datetime.now(UTC) - oldest).total_seconds()) if oldest is not None else None
        return Backlog(str(self.folder), len(seen), records, age, read_ship_error(self.folder))


def backlog(folder: Path) -> Backlog:
    """Every segment in ``folder`` (held by a live writer or not): how many, their records, the age of the
    oldest record, and the shipper's last error."""
    return BacklogScanner(folder).scan()


def write_ship_error(folder: Path, message: str) -> None:
    with contextlib.suppress(OSError):
        tmp = folder / f".{SHIP_ERROR_FILE}.{os.getpid()}"
        tmp.write_bytes(orjson.dumps({"message": message, "at": datetime.now(UTC).isoformat(),
                                      "pid": os.getpid()}))
        os.replace(tmp, folder / SHIP_ERROR_FILE)


def clear_ship_error(folder: Path) -> None:
    with contextlib.suppress(OSError):
        (folder / SHIP_ERROR_FILE).unlink(missing_ok=True)


def read_ship_error(folder: Path) -> dict[str, Any] | None:
    try:
        value = orjson.loads((folder / SHIP_ERROR_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
