"""Adaptive micro-batching: concurrent requests for one model version become one predict call.

``await batcher.submit(rows)`` queues the rows; one dispatcher task per batcher takes queued requests in
arrival order into a batch of at most ``max_batch_rows`` rows (never more: a request with more rows is
split into chunks that are batched like any other, and its answer is put back together), runs the
predict function, and hands every caller exactly its own slice.

Where the predict function runs follows its cost: a batch expected to take at most ``inline_max_ms`` (from
the cost fitted below) runs on the event loop, a short pause between requests; the first batch, slower
models and bigger batches run in a thread so the event loop stays free. A thread hop (submit, wake the
thread, wake the loop again) costs ~0.1 ms of CPU and latency on a small machine, as much as a one-row
ONNX predict: for a fast model it was the largest single cost of a one-row request at concurrency 1.

How long a batch waits for company adapts, as in Triton's dynamic batcher and BentoML's adaptive one:
- idle or sparse traffic (requests further apart than the model's fixed cost per call): no wait at all;
- busy traffic: up to ``min(max_wait, fixed cost per call)``: waiting longer than the call it saves
  would cost more latency than it buys;
- while ``max_concurrency`` batches are running, new requests queue and form the next batch for free.
The fixed cost per call and the cost per row are fitted on the batches run so far (least squares that
forgets old batches), the arrival gap is a moving average.

A batch that fails fails only its own callers, each with its own copy of the error. ``stats()`` and the
optional ``observer`` callback give batch sizes and queue waits for metrics.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from modelyard.config import Settings
from modelyard.errors import ConfigError, ModelyardError, PredictionError
from modelyard.runtime.columns import Columns, concat_rows, slice_rows

Batchable: TypeAlias = pd.DataFrame | Columns  # validated rows
Result = Any  # an ndarray, or a tuple of ndarrays, each with one entry per row
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


@dataclass(frozen=True)
class BatchConfig:
    """Per-model batching bounds. ``max_wait_ms=0`` never waits (batches still form under load)."""

    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    max_concurrency: int = 1
    inline_max_ms: float = 1.0  # batches expected to take at most this long run on the event loop; 0: never

    def __post_init__(self) -> None:
        if self.max_batch_rows < 1 or self.max_concurrency < 1 or self.max_wait_ms < 0 or self.inline_max_ms < 0:
            raise ValueError(f"invalid batching bounds: {self}")


def batch_config(settings: Settings, model: str) -> BatchConfig:
    """The bounds for ``model``: the settings' defaults, then its entry in ``batch_per_model``."""
    values: dict[str, Any] = {"max_batch_rows": settings.batch_max_rows,
                              "max_wait_ms": settings.batch_max_wait_ms}
    values.update(settings.batch_per_model.get(model, {}))
    try:
        return BatchConfig(max_batch_rows=int(values["max_batch_rows"]),
                           max_wait_ms=float(values["max_wait_ms"]),
                           max_concurrency=int(values.get("max_concurrency", 1)),
                           inline_max_ms=float(values.get("inline_max_ms", BatchConfig.inline_max_ms)))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"batching settings for {model}: {exc}") from exc


@dataclass(frozen=True)
class BatchRecord:
    """One batch that ran: what an observer gets (to feed Prometheus histograms, for instance)."""

    rows: int
    requests: int
    queue_waits: tuple[float, ...]
    seconds: float
    error: str | None


@dataclass
class BatcherStats:
    batches: int = 0
    requests: int = 0
    rows: int = 0
    failed_batches: int = 0
    largest_batch_rows: int = 0
    batch_rows_histogram: dict[str, int] = field(default_factory=dict)
    queue_wait_seconds_sum: float = 0.0
    queue_wait_p50: float = 0.0
    queue_wait_p99: float = 0.0
    queued_requests: int = 0
    wait_budget_seconds: float = 0.0
    cost_per_call_seconds: float | None = None
    cost_per_row_seconds: float | None = None


@dataclass
class _Item:
    rows: Batchable
    n: int
    future: asyncio.Future[Result]
    enqueued: float


class _CostModel:
    """seconds ≈ per_call + per_row * rows, fitted on recent batches (older ones fade out).

    A batch that took more than ``SPIKE`` times what the fit expects counts as ``SPIKE`` times (once
    ``WARM`` batches are known): a garbage collection, a page fault or a stolen time slice on a shared host
    stretches one batch, not the model's cost. Unclipped, one 20 ms stall in 0.1 ms batches lifted the fit
    past ``inline_max_ms`` for the next ~20 batches, each then paying a thread hop. A lasting change of
    cost still comes through, by up to ``SPIKE`` times a batch.
    """

    SPIKE = 4.0
    WARM = 5

    def __init__(self, decay: float = 0.9) -> None:
        self.decay = decay
        self.s0 = self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.seen = 0

    def observe(self, rows: int, seconds: float) -> None:
        if self.seen >= self.WARM:
            fitted = self.fit()
            if fitted is not None:
                seconds = min(seconds, self.SPIKE * (fitted[0] + fitted[1] * rows))
        self.seen += 1
        d = self.decay
        self.s0, self.sx, self.sy = self.s0 * d + 1, self.sx * d + rows, self.sy * d + seconds
        self.sxx, self.sxy = self.sxx * d + rows * rows, self.sxy * d + rows * seconds

    def fit(self) -> tuple[float, float] | None:
        if self.s0 == 0:
            return None
        mx, my = self.sx / self.s0, self.sy / self.s0
        var = self.sxx / self.s0 - mx * mx
        if var <= 1e-9 * max(1.0, mx * mx):  # one batch size only: the whole cost bounds the fixed part
            return my, 0.0
        per_row = max(0.0, (self.sxy / self.s0 - mx * my) / var)
        return min(my, max(0.0, my - per_row * mx)), per_row


class MicroBatcher:
    """Coalesces concurrent ``submit`` calls for one model version into bounded predict calls."""

    def __init__(
        self,
        predict: Callable[[Batchable], Result],
        config: BatchConfig | None = None,
        *,
        name: str = "model",
        executor: Executor | None = None,
        observer: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self.predict = predict
        self.config = config or BatchConfig()
        self.name = name
        self.observer = observer
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(self.config.max_concurrency,
                                                        thread_name_prefix=f"batch-{name}")
        self._queue: collections.deque[_Item] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None  # the dispatcher's, while it waits for requests
        self._slots = asyncio.Semaphore(self.config.max_concurrency)
        self._dispatcher: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._cost = _CostModel()
        self._gap: float | None = None
        self._last_arrival: float | None = None
        self._waits: collections.deque[float] = collections.deque(maxlen=4096)
        self._stats = BatcherStats(batch_rows_histogram={str(b): 0 for b in (*BATCH_SIZE_BUCKETS, "inf")})
        self._closed = False

    @classmethod
    def for_model(cls, model: Any, config: BatchConfig | None = None, *, proba: bool = False,
                  **kwargs: Any) -> MicroBatcher:
        """Batch ``model.predict_frame`` (or, with ``proba``, labels and probabilities together)."""
        if proba:
            def both(rows: Batchable) -> Result:
                return model.predict_frame(rows), model.predict_proba_frame(rows)
            return cls(both, config, name=f"{model.name}-v{model.version}", **kwargs)
        return cls(model.predict_frame, config, name=f"{model.name}-v{model.version}", **kwargs)

    # ---- callers ----------------------------------------------------------------------------------------
    async def submit(self, rows: Batchable, *, alone: bool = False) -> Result:
        """Predict ``rows`` (validated) together with whatever else is queued; return this call's answer.
        ``alone``: the caller knows no other request is in progress (a server with one request in flight):
        with nothing queued or running, a batch that would run inline is predicted at once (``_alone``);
        under load requests are in flight together, queue up and are batched."""
        if self._closed:
            raise PredictionError(f"{self.name}: the batcher is closed")
        n, limit = len(rows), self.config.max_batch_rows
        if n <= limit:
            if alone and self._alone(n):
                return self._predict_alone(rows, n)
            return await self._enqueue(rows, n)
        parts = await asyncio.gather(*(self._enqueue(slice_rows(rows, i, i + limit), min(limit, n - i))
                                       for i in range(0, n, limit)))
        return _join(parts)

    def _arrived(self, now: float) -> None:
        if self._last_arrival is not None:
            sample = min(now - self._last_arrival, 1.0)
            self._gap = sample if self._gap is None else 0.8 * self._gap + 0.2 * sample
        self._last_arrival = now

    def _alone(self, n: int) -> bool:
        """Whether a lone caller's request of ``n`` rows is predicted at once, in the caller's own turn:
        nothing is queued or running and the batch would run inline anyway (its fitted cost is known and
        small). It saves the two turns of the event loop that the hand-over to the dispatcher and back cost."""
        return not self._queue and not self._running and not self._slots.locked() and self.runs_inline(n)

    def _predict_alone(self, rows: Batchable, n: int) -> Result:
        t0 = time.perf_counter()
        self._arrived(t0)
        error: BaseException | None = None
        try:
            result, seconds = self._run([rows], n)
        except BaseException as exc:
            error = exc
            if isinstance(exc, Exception):
                raise self._caller_error(exc, 1, n) from exc
            raise
        finally:  # counted as a one-request batch, as the dispatcher counts its own
            self._record(BatchRecord(n, 1, (0.0,), time.perf_counter() - t0,
                                     None if error is None else f"{type(error).__name__}: {error}"))
        self._cost.observe(n, seconds)
        return result

    def _enqueue(self, rows: Batchable, n: int) -> asyncio.Future[Result]:
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch(), name=f"batcher-{self.name}")
            self._dispatcher.add_done_callback(self._dispatcher_ended)
        now = time.perf_counter()  # not loop.time(): uvloop's counts whole ms and stands still within a turn
        self._arrived(now)
        future: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Item(rows, n, future, now))
        if self._waiter is not None:
            _release(self._waiter)
        return future

    # ---- the dispatcher ---------------------------------------------------------------------------------
    def _dispatcher_ended(self, task: asyncio.Task[None]) -> None:
        """A dispatcher that died must not leave callers waiting forever: fail what it left queued."""
        if task.cancelled() or task.exception() is None:
            return
        reason = f"{self.name}: the batcher stopped: {task.exception()}"
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(PredictionError(reason))

    def wait_budget(self) -> float:
        """How long the next batch may wait for more requests (seconds); 0 when idle or sparse."""
        max_wait = self.config.max_wait_ms / 1000.0
        fitted = self._cost.fit()
        if max_wait <= 0 or self._gap is None or fitted is None:
            return 0.0
        per_call = fitted[0]
        if self._gap >= max_wait or self._gap >= per_call:
            return 0.0
        return min(max_wait, per_call)

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        limit = self.config.max_batch_rows
        while True:
            if not self._queue:
                await self._sleep(loop, None)
                continue
            await self._slots.acquire()
            deadline = self._queue[0].enqueued + self.wait_budget() if self._queue else time.perf_counter()
            batch: list[_Item] = []
            rows = 0
            while True:
                while self._queue and rows + self._queue[0].n <= limit:
                    item = self._queue.popleft()
                    if not item.future.done():  # a caller that gave up before dispatch is skipped
                        batch.append(item)
                        rows += item.n
                full = rows >= limit or bool(self._queue)
                remaining = deadline - time.perf_counter()
                if full or remaining <= 0:
                    break
                await self._sleep(loop, remaining)
            if not batch:
                self._slots.release()
                continue
            if self.runs_inline(rows):
                self._execute_inline(batch, rows)
                continue
            task = loop.create_task(self._execute(batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        """Until a request is queued, or ``timeout`` seconds have passed. A future and a timer: the
        ``asyncio.Event`` + ``wait_for`` this replaces made a task and a timer for every wait."""
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _release, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    def runs_inline(self, rows: int) -> bool:
        """Whether a batch of ``rows`` rows is predicted on the event loop: its fitted cost is known and at
        most ``inline_max_ms`` (never for the first batch, whose cost nobody knows yet)."""
        fitted = self._cost.fit()
        if fitted is None or self.config.inline_max_ms <= 0:
            return False
        per_call, per_row = fitted
        return per_call + per_row * rows <= self.config.inline_max_ms / 1000.0

    async def _execute(self, batch: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        done: tuple[Result, float] | BaseException
        try:
            done = await loop.run_in_executor(self._executor, self._run, [i.rows for i in batch], rows)
        except BaseException as exc:
            done = exc
        self._settle(batch, rows, started, done)

    def _execute_inline(self, batch: list[_Item], rows: int) -> None:
        started = time.perf_counter()
        done: tuple[Result, float] | BaseException
        try:
            done = self._run([i.rows for i in batch], rows)
        except BaseException as exc:
            done = exc
        self._settle(batch, rows, started, done)

    def _settle(self, batch: list[_Item], rows: int, started: float,
                done: tuple[Result, float] | BaseException) -> None:
        """Hand every caller its slice of the result (or its copy of the error), free the slot, record the
        batch; ``started``: when it left the queue (``perf_counter``, the queue's clock); ``done`` is the
        result with the predict's own seconds, or the error. A cancellation or an
        exit goes on up once the callers have theirs."""
        waits = tuple(started - item.enqueued for item in batch)
        error = done if isinstance(done, BaseException) else None
        try:
            if isinstance(done, BaseException):
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(self._caller_error(done, len(batch), rows))
            else:
                result, seconds = done
                self._cost.observe(rows, seconds)
                offset = 0
                for item in batch:
                    if not item.future.done():
                        item.future.set_result(_take(result, offset, offset + item.n))
                    offset += item.n
        finally:
            self._slots.release()
            self._record(BatchRecord(rows, len(batch), waits, time.perf_counter() - started,
                                     None if error is None else f"{type(error).__name__}: {error}"))
        if error is not None and not isinstance(error, Exception):
            raise error

    def _run(self, parts: list[Batchable], rows: int) -> tuple[Result, float]:
        """Join the requests, predict, check one answer per row came back; the result and the seconds it
        took, measured where it ran (the cost model fits the model's own cost, not a thread hop's)."""
        t0 = time.perf_counter()
        result = self.predict(concat_rows(parts))
        arrays = result if isinstance(result, tuple) else (result,)
        arrays = tuple(np.asarray(a) for a in arrays)
        if any(len(a) != rows for a in arrays):
            raise PredictionError(f"{self.name}: the model returned {[len(a) for a in arrays]} answers "
                                  f"for {rows} rows")
        return (arrays if isinstance(result, tuple) else arrays[0]), time.perf_counter() - t0

    def _caller_error(self, exc: BaseException, requests: int, rows: int) -> BaseException:
        if isinstance(exc, ModelyardError):
            return copy.copy(exc)
        err = PredictionError(f"{self.name}: the batch this request was in ({requests} requests, "
                              f"{rows} rows) failed: {type(exc).__name__}: {exc}", model=self.name)
        err.__cause__ = exc
        return err

    # ---- metrics ----------------------------------------------------------------------------------------
    def _record(self, record: BatchRecord) -> None:
        s = self._stats
        s.batches += 1
        s.requests += record.requests
        s.rows += record.rows
        s.failed_batches += record.error is not None
        s.largest_batch_rows = max(s.largest_batch_rows, record.rows)
        bucket = next((str(b) for b in BATCH_SIZE_BUCKETS if record.rows <= b), "inf")
        s.batch_rows_histogram[bucket] += 1
        s.queue_wait_seconds_sum += sum(record.queue_waits)
        self._waits.extend(record.queue_waits)
        if self.observer is not None:
            try:
                self.observer(record)
            except Exception:  # metrics must never fail a prediction
                pass

    def stats(self) -> BatcherStats:
        s = copy.deepcopy(self._stats)
        if self._waits:
            p50, p99 = np.quantile(list(self._waits), [0.5, 0.99])
            s.queue_wait_p50, s.queue_wait_p99 = float(p50), float(p99)
        s.queued_requests = len(self._queue)
        s.wait_budget_seconds = self.wait_budget()
        fitted = self._cost.fit()
        if fitted is not None:
            s.cost_per_call_seconds, s.cost_per_row_seconds = fitted
        return s

    async def aclose(self) -> None:
        """Stop taking requests, let queued and running batches finish, then stop the dispatcher."""
        self._closed = True
        while self._queue or self._running:
            await asyncio.sleep(0.001)
            if self._dispatcher is None or self._dispatcher.done():
                break
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            try:
                await self._dispatcher
            except asyncio.CancelledError:
                pass
        if self._own_executor:
            self._executor.shutdown(wait=False)


def _release(waiter: asyncio.Future[None]) -> None:
    """Wake the dispatcher's wait (a new request, or its timer), once."""
    if not waiter.done():
        waiter.set_result(None)


def _take(result: Result, start: int, stop: int) -> Result:
    if isinstance(result, tuple):
        return tuple(a[start:stop] for a in result)
    return result[start:stop]


def _join(parts: list[Result]) -> Result:
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(parts[0])))
    return np.concatenate(parts)
