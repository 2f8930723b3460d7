"""The local, append-only spill file: where prediction records wait while the database cannot be reached.

Each writer appends JSON lines to its own segment (``spill-<pid>-<n>.jsonl``) and fsyncs after every batch,
so a record is on disk before the writer moves on. A segment is locked (``flock``) while its writer has it
open; a segment nobody holds (closed by its writer, or left by a process that died) can be drained by any
process sharing the folder. Draining is safe to repeat: the store ignores records it already holds.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import orjson

from modelyard.predlog.records import PredictionRecord

log = logging.getLogger("modelyard.predlog")
PREFIX = "spill-"
SUFFIX = ".jsonl"


def dumps_record(record: PredictionRecord) -> bytes:
    """One JSON line; NaN and infinities become null (JSON has neither)."""
    return orjson.dumps(record.to_json(), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                        default=str)


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
                log.warning("spill file %s line %d is not a whole record (%s): skipped", path.name, n, exc)
    return records


class SpillSegment:
    """The segment this process appends to; opened on the first spill, locked while open."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path: Path | None = None
        self.records = 0
        self._fd: int | None = None
        self._serial = 0

    def append(self, records: Sequence[PredictionRecord]) -> None:
        if not records:
            return
        if self._fd is None:
            self._open()
        assert self._fd is not None
        data = b"".join(dumps_record(r) + b"\n" for r in records)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records += len(records)

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        self.path = self.folder / f"{PREFIX}{os.getpid()}-{self._serial}-{os.urandom(3).hex()}{SUFFIX}"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        self.records = 0

    def close(self) -> Path | None:
        """Release the segment so it can be drained; return its path (None when nothing was spilled)."""
        if self._fd is None:
            return None
        os.close(self._fd)  # closing the descriptor releases the lock
        self._fd = None
        path, self.path = self.path, None
        return path


def segments(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.startswith(PREFIX) and p.name.endswith(SUFFIX))


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
    if not path.exists():  # drained and removed by another process while we waited
        os.close(fd)
        return None
    return fd


@contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Lock a segment for draining; yields False when another process holds it (or it is gone)."""
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
    """Records waiting in segments no live writer holds (what a starting writer will drain)."""
    total = 0
    for path in segments(folder):
        with claim(path) as mine:
            if mine:
                total += count_records(path)
    return total
