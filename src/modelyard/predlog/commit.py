"""Group commit: the records of concurrent requests go to the segment in one write.

``Group`` gathers what the requests of one event-loop iteration commit; ``Syncer`` is the ``machine``
durability thread that writes and fdatasyncs each group while the next one gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelyard.predlog.records import PredictionRecord


@dataclass
class Group:
    """Records of the requests that commit in one event-loop iteration."""

    data: list[bytes] = field(default_factory=list)
    records: list[PredictionRecord] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


def settle(waiters: list[asyncio.Future[None]], error: Exception | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


class Syncer:
    """``machine`` durability: one thread writes and fdatasyncs each group while the next gathers."""

    def __init__(self, write: Callable[[bytes, list[PredictionRecord]], Exception | None]) -> None:
        self.write = write  # writes and fdatasyncs; returns the error to raise in the waiters, if any
        self._groups: deque[tuple[asyncio.AbstractEventLoop, Group]] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modelyard-predlog-sync", daemon=True)
        self._thread.start()

    def put(self, loop: asyncio.AbstractEventLoop, group: Group) -> None:
        if self._thread is None:  # not started (tests, one-off use): write here
            settle(group.waiters, self.write(b"".join(group.data), group.records))
            return
        with self._ready:
            self._groups.append((loop, group))
            self._ready.notify()

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._groups and not self._stopping:
                    self._ready.wait()
                if not self._groups and self._stopping:
                    return
                taken = list(self._groups)
                self._groups.clear()
            data = b"".join(b"".join(g.data) for _, g in taken)
            records = [r for _, g in taken for r in g.records]
            error = self.write(data, records)
            for loop, group in taken:
                with contextlib.suppress(RuntimeError):  # a loop that closed meanwhile
                    loop.call_soon_threadsafe(settle, group.waiters, error)
