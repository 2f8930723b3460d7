"""The chunk executor: read ▶ score ▶ write as three overlapping stages, results written in input order.

The scoring stage is an executor: threads of the driver (one per core), or a Dask cluster. The driver keeps
up to two chunks per scoring thread in flight and the writer takes results in submission order, so the output is
always committed as a prefix of the input (what resuming relies on).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


class LocalExecutor:
    """Scores in this process on ``workers`` threads (one per core by default) while the reader and writer
    threads do the I/O. Each thread scores whole chunks of its own, its ONNX calls unsplit
    (``fastpath.run_alone_in_this_thread``): with one thread scoring and each of its ONNX calls cut in two,
    a core waited for the slower half and for the next chunk's validation (measured on 1M rows,
    PostgreSQL → PostgreSQL: the machine was 13% idle; 3-4% with a chunk per core).

    ``threads`` caps OpenMP in those threads (HistGradientBoosting, ...): on a busy machine an OpenMP team
    per chunk costs more than it gains (measured: 4x slower on 250-row chunks with two contended cores),
    and the other cores are reading and writing. Dask workers already run with ``OMP_NUM_THREADS=1``.
    """

    def __init__(self, fn: Callable[[pd.DataFrame, int], ScoredChunk], threads: int | None = 1,
                 workers: int | None = None) -> None:
        self.fn = fn
        self.threads = threads
        workers = max(1, workers or os.cpu_count() or 1)
        self.window = 2 * workers  # results the writer has not taken yet: one queued per thread besides its own
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="batch-score", initializer=self._in_thread)

    def _in_thread(self) -> None:
        from threadpoolctl import threadpool_limits

        from modelyard.runtime.fastpath import run_alone_in_this_thread

        run_alone_in_this_thread()
        if self.threads:
            threadpool_limits(self.threads, user_api="openmp")  # OpenMP's limit is per thread: kept for its life

    def submit(self, frame: pd.DataFrame, offset: int) -> Future[ScoredChunk]:
        return self.pool.submit(self.fn, frame, offset)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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
