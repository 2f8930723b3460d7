"""The chunk executor: read ▶ score ▶ write as three overlapping stages, results written in input order.

The scoring stage is an executor: inline in the driver, or a Dask cluster. The driver keeps up to two
chunks per worker thread in flight and the writer takes results in submission order, so the output is
always committed as a prefix of the input (what resuming relies on).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pandas as pd

from modelyard.batch.chunk import ScoredChunk, score_chunk_remote
from modelyard.config import Settings
from modelyard.errors import BatchError


class _Future(Protocol):
    def result(self) -> ScoredChunk: ...


class Executor(Protocol):
    window: int

    def submit(self, frame: pd.DataFrame, offset: int) -> _Future: ...

    def close(self) -> None: ...


class _Done:
    def __init__(self, value: ScoredChunk) -> None:
        self.value = value

    def result(self) -> ScoredChunk:
        return self.value


class LocalExecutor:
    """Scores in the driver's main thread while the reader and writer threads do the I/O.

    ``threads`` caps OpenMP in that thread (HistGradientBoosting, ...): on a busy machine an OpenMP team
    per chunk costs more than it gains (measured: 4x slower on 250-row chunks with two contended cores),
    and the other cores are reading and writing. Dask workers already run with ``OMP_NUM_THREADS=1``.
    """

    window = 1

    def __init__(self, fn: Callable[[pd.DataFrame, int], ScoredChunk], threads: int | None = 1) -> None:
        from threadpoolctl import threadpool_limits

        self.fn = fn
        self._limits = threadpool_limits(threads, user_api="openmp") if threads else None

    def submit(self, frame: pd.DataFrame, offset: int) -> _Done:
        return _Done(self.fn(frame, offset))

    def close(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()


class DaskExecutor:
    """Scores on a Dask cluster; each worker loads the pinned version from the registry once."""

    def __init__(self, address: str, settings: Settings, name: str, version: int, key: str | None,
                 with_inputs: bool, keep: tuple[str, ...] = ()) -> None:
        from dask.distributed import Client

        try:
            self.client = Client(address, timeout="15s", set_as_default=False)  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise BatchError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        self.args = (settings, name, version)
        self.key, self.with_inputs, self.keep = key, with_inputs, keep
        self.window = max(2, 2 * sum(self.client.nthreads().values()))  # type: ignore[no-untyped-call]

    def submit(self, frame: pd.DataFrame, offset: int) -> Any:
        return self.client.submit(score_chunk_remote, *self.args, frame, self.key, offset, self.with_inputs,
                                  self.keep, pure=False)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def _put(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            continue
    return None


def run_stages(chunks: Iterator[pd.DataFrame], executor: Executor,
                 write: Callable[[int, ScoredChunk], None],
                 on_first: Callable[[pd.DataFrame, int], None]) -> None:
    """Drive ``chunks`` through ``executor`` into ``write(offset, scored)``; the first error stops all."""
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue[Any] = queue.Queue(maxsize=2)
    q_out: queue.Queue[Any] = queue.Queue(maxsize=executor.window)

    def reader() -> None:
        offset = 0
        try:
            for frame in chunks:
                if not len(frame):  # a header-only file or an empty batch: nothing to score
                    continue
                if not _put(q_in, (offset, frame), stop):
                    return
                offset += len(frame)
        except BaseException as exc:
            errors.append(exc)
            stop.set()
        _put(q_in, None, stop)

    def writer() -> None:
        try:
            while True:
                item = _get(q_out, stop)
                if item is None or stop.is_set():
                    return
                offset, future = item
                write(offset, future.result())
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=reader, name="batch-reader", daemon=True),
               threading.Thread(target=writer, name="batch-writer", daemon=True)]
    for t in threads:
        t.start()
    first = True
    try:
        while True:
            item = _get(q_in, stop)
            if item is None:
                break
            offset, frame = item
            if first:
                on_first(frame, offset)
                first = False
            if not _put(q_out, (offset, executor.submit(frame, offset)), stop):
                break
        _put(q_out, None, stop)
        threads[1].join()
    except BaseException as exc:
        errors.append(exc)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    if errors:
        raise errors[0]
