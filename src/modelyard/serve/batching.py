"""Micro-batching in the server: one ``MicroBatcher`` per served model version (and output kind) per worker.

Small requests (up to ``JOIN_MAX_ROWS`` rows, and never more than the model's ``max_batch_rows``) are
validated on the event loop into column arrays and join their version's batch; concurrent requests then
share one predict call, bounded by ``max_batch_rows``, after a wait that adapts to the traffic (none when
idle; see ``runtime/batcher.py``). Larger requests are passed through: validated and predicted in one call
in a worker thread, since they already amortize the fixed cost of a call and queueing them would only
delay the small ones. Bounds come from the settings (``batch_max_rows``, ``batch_max_wait_ms``, and per
model ``batch_per_model``); every batch feeds ``modelyard_batch_rows`` and
``modelyard_batch_queue_wait_seconds``.

Native thread pools are held to one thread in every thread that predicts: OpenMP's limit is per thread,
so the limit set on the event loop at start-up does not reach the batcher's or anyio's threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
from threadpoolctl import threadpool_limits

from modelyard.config import Settings
from modelyard.monitor import metrics
from modelyard.runtime import Model
from modelyard.runtime.batcher import BatchConfig, BatchRecord, MicroBatcher, batch_config
from modelyard.runtime.columns import Columns

log = logging.getLogger("modelyard.serve")
JOIN_MAX_ROWS = 64  # requests up to this many rows join a batch; larger ones are predicted on their own
MAX_BATCHERS = 32  # batchers kept per worker (versions x output kinds), least recently used closed first
T = TypeVar("T")
_limited = threading.local()


def one_native_thread() -> None:
    """Hold OpenMP/BLAS to one thread in the calling thread (once per thread): the workers are the
    parallelism, and pools of several threads per worker spin against each other on a small machine."""
    if not getattr(_limited, "done", False):
        threadpool_limits(limits=1)
        _limited.done = True


def _single_threaded(fn: Callable[..., T], *args: Any) -> T:
    one_native_thread()
    return fn(*args)


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in anyio's worker threads, with native thread pools held to one thread."""
    return await anyio.to_thread.run_sync(_single_threaded, fn, *args)


class Batching:
    """The batchers of one server process, created on a version's first small request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._batchers: OrderedDict[tuple[str, int | None, bool], _Entry] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def config(self, model: Model) -> BatchConfig:
        return batch_config(self.settings, model.name)

    def joins(self, model: Model, rows: int, proba: bool) -> bool:
        """Whether a request of ``rows`` rows joins ``model``'s batch (else it is passed through)."""
        return rows <= min(JOIN_MAX_ROWS, self._batcher(model, proba).config.max_batch_rows)

    async def predict(self, model: Model, rows: Columns, proba: bool, *,
                      alone: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities with ``proba``) for validated ``rows``, predicted with their batch
        (``alone``: no other request is in progress in this process, see ``MicroBatcher.submit``)."""
        result = await self._batcher(model, proba).submit(rows, alone=alone)
        if proba:
            return result[0], result[1]
        return result, None

    def _batcher(self, model: Model, proba: bool) -> MicroBatcher:
        key = (model.name, model.version, proba)
        entry = self._batchers.get(key)
        if entry is not None and entry.model is model:
            self._batchers.move_to_end(key)
            return entry.batcher
        if entry is not None:  # the same version loaded again (a repaired artifact): a fresh batcher
            self._retire(self._batchers.pop(key))
        version = str(model.version)

        def observe(record: BatchRecord) -> None:
            metrics.observe_batch(model.name, version, record.rows, record.queue_waits)

        config = self.config(model)
        executor = ThreadPoolExecutor(config.max_concurrency, thread_name_prefix=f"batch-{model.name}",
                                      initializer=one_native_thread)
        batcher = MicroBatcher.for_model(model, config, proba=proba, executor=executor, observer=observe)
        self._batchers[key] = _Entry(model, batcher, executor)
        while len(self._batchers) > MAX_BATCHERS:
            self._retire(self._batchers.popitem(last=False)[1])
        return batcher

    def _retire(self, entry: _Entry) -> None:
        """Close a batcher no longer handed out, once its queued and running batches are done."""
        task = asyncio.get_running_loop().create_task(entry.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        """Finish every queued batch, then stop the dispatchers and their threads (server shutdown)."""
        entries = list(self._batchers.values())
        self._batchers.clear()
        await asyncio.gather(*(e.close() for e in entries), *self._closing)


@dataclass(frozen=True)
class _Entry:
    model: Model
    batcher: MicroBatcher
    executor: ThreadPoolExecutor

    async def close(self) -> None:
        try:
            await self.batcher.aclose()
        finally:
            self.executor.shutdown(wait=False)
