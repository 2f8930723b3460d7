"""Work done after the answer: the shadow version, and the primary mirroring a canary, see the same rows.

Their outputs go to the prediction log under the request's id, on route ``shadow`` or ``mirror``, and are
never returned. Jobs wait in a bounded queue (``shadow_queue_size``); when it is full a job is dropped and
counted (``modelyard_shadow_dropped_total``), so a slow or stuck shadow never delays or blocks a request.
One worker collects the jobs arriving within ``LINGER`` seconds (at most ``MAX_BATCH_ROWS`` rows), groups them
by model, predicts each group in one call and logs one record per request: one call for many requests costs
a fraction of one call each. A model whose last call took under ``INLINE_BUDGET`` is called on the event loop,
between requests, as a short pause; the first call, slower models and requests too large for one call run on
a thread. Measured at concurrency 1 (one-row requests, a shadow on every one): on a thread, contending for
the GIL in pandas code, the shadow raised the requests' p50 by ~50%; on the loop it did not measurably. A
failure is logged as a record with ``error`` and counted (``modelyard_shadow_errors_total``); the caller has
had their answer long before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from modelyard.errors import ModelyardError
from modelyard.monitor import metrics
from modelyard.predlog import PredictionLogWriter, PredictionRecord
from modelyard.rollout import MIRROR, SHADOW
from modelyard.runtime import Model
from modelyard.serve.inference import Outcome, plain, predict_now
from modelyard.serve.repository import ModelRepository

log = logging.getLogger("modelyard.serve")
MAX_BATCH_ROWS = 128
"""Rows predicted in one call, from as many waiting jobs as it takes: bounds how long the loop pauses."""
LINGER = 0.2
"""Seconds the worker waits for more jobs after the first one (nobody waits for a shadow's answer)."""
INLINE_BUDGET = 0.05
"""Seconds a call may take to be run on the event loop next time (a pause every request may wait behind)."""


@dataclass(frozen=True)
class ShadowJob:
    request_id: str
    name: str
    rows: Sequence[Mapping[str, Any]]
    answered_by: int
    route: str  # shadow | mirror
    model: Model | None = None  # mirror: the primary; shadow: None, the shadow alias when the job runs
    protocol: str = "v1"


class ShadowRunner:
    """The bounded queue and its worker; ``after(outcome)`` is called once a request was answered."""

    def __init__(self, repository: ModelRepository, writer: PredictionLogWriter | None, *,
                 maxsize: int = 1000, linger: float = LINGER) -> None:
        self.repository = repository
        self.writer = writer
        self.linger = linger
        self._stopping = False
        self._fast: dict[tuple[str, int], bool] = {}  # (model, version) → its last call fit INLINE_BUDGET
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.done = 0

    # ---- the request side ----------------------------------------------------------------------------
    def after(self, outcome: Outcome, protocol: str) -> None:
        """Queue the shadow and mirror work of an answered request; never waits."""
        routed = outcome.routed
        answered_by = int(routed.model.version or 0)
        rows = outcome.parsed.rows
        if routed.shadow:
            self.submit(ShadowJob(outcome.request_id, routed.name, rows, answered_by, SHADOW, None, protocol))
        if routed.mirror and routed.primary is not None:
            self.submit(ShadowJob(outcome.request_id, routed.name, rows, answered_by, MIRROR, routed.primary,
                                  protocol))

    def submit(self, job: ShadowJob) -> bool:
        try:
            self._queue.put_nowait(job)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            metrics.SHADOW_DROPPED.labels(job.name, job.route).inc()
            return False

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    # ---- life cycle ----------------------------------------------------------------------------------
    async def start(self) -> ShadowRunner:
        self._task = asyncio.create_task(self._work(), name="modelyard-shadow")
        return self

    async def stop(self, timeout: float = 5.0) -> None:
        """Finish the jobs waiting (at most ``timeout`` seconds), then stop the worker."""
        if self._task is None:
            return
        self._stopping = True  # no more lingering: finish what is there
        try:
            await asyncio.wait_for(self._queue.join(), timeout)
        except TimeoutError:
            log.warning("shadow queue: %d jobs left undone at shutdown", self._queue.qsize())
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    # ---- the worker ----------------------------------------------------------------------------------
    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            rows = len(jobs[0].rows)
            until = loop.time() + self.linger
            while rows < MAX_BATCH_ROWS:
                if self._queue.empty():
                    left = until - loop.time()
                    if left <= 0 or self._stopping:
                        break
                    try:
                        jobs.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
                else:
                    jobs.append(self._queue.get_nowait())
                rows += len(jobs[-1].rows)
            try:
                await self._run(jobs)
            except Exception:  # never let one bad batch stop the worker
                log.exception("shadow worker: a batch of %d jobs failed", len(jobs))
            finally:
                for _ in jobs:
                    self._queue.task_done()

    async def _run(self, jobs: list[ShadowJob]) -> None:
        groups: dict[tuple[str, str, int], list[ShadowJob]] = {}
        for job in jobs:
            groups.setdefault((job.name, job.route, id(job.model)), []).append(job)
        for (name, route, _), group in groups.items():
            model = group[0].model or await self._shadow_model(name)
            if model is None:
                continue
            group = [j for j in group if route == MIRROR or j.answered_by != model.version]
            if not group:
                continue
            key = (model.name, int(model.version or 0))
            small = sum(len(j.rows) for j in group) <= MAX_BATCH_ROWS
            if small and self._fast.get(key, False):
                results, seconds = _predict_group(model, group)
                await asyncio.sleep(0)  # let waiting requests in between two groups
            else:
                results, seconds = await anyio.to_thread.run_sync(_predict_group, model, group)
            if small:
                self._fast[key] = seconds < INLINE_BUDGET
            self._log(model, group, results, seconds)

    async def _shadow_model(self, name: str) -> Model | None:
        try:
            return await self.repository.get(name, SHADOW)
        except ModelyardError as exc:  # removed since, or cannot be loaded: the caller never knows
            log.warning("shadow of %s is unavailable: %s", name, exc.message)
            return None

    def _log(self, model: Model, jobs: list[ShadowJob], results: list[tuple[list[Any] | None, str | None]],
             seconds: float) -> None:
        version = int(model.version or 0)
        for job, (outputs, error) in zip(jobs, results, strict=True):
            self.done += 1
            if error is not None:
                metrics.SHADOW_ERRORS.labels(model.name, str(version), job.route).inc()
            if self.writer is None:
                continue
            self.writer.submit(PredictionRecord(
                request_id=job.request_id, model=model.name, version=version, route=job.route,
                inputs=list(job.rows), outputs=outputs, n_rows=len(job.rows), latency_ms=seconds * 1000.0,
                error=error, meta={"protocol": job.protocol, "answered_by": job.answered_by,
                                   "batch_requests": len(jobs)},
            ))


def _predict_group(model: Model, jobs: list[ShadowJob]) -> tuple[list[tuple[list[Any] | None, str | None]],
                                                                  float]:
    """Every job's outputs (or error) from one call; one call per job when the batch as a whole fails."""
    started = time.perf_counter()
    try:
        rows = [row for job in jobs for row in job.rows]
        values = plain(predict_now(model, rows, False).predictions)
        out: list[tuple[list[Any] | None, str | None]] = []
        start = 0
        for job in jobs:
            out.append((values[start:start + len(job.rows)], None))
            start += len(job.rows)
        return out, time.perf_counter() - started
    except Exception as exc:
        if len(jobs) == 1:
            return [(None, _error(exc))], time.perf_counter() - started
    out = []
    for job in jobs:  # find which requests fail: the others still get their record
        try:
            out.append((plain(predict_now(model, job.rows, False).predictions), None))
        except Exception as exc:
            out.append((None, _error(exc)))
    return out, time.perf_counter() - started


def _error(exc: Exception) -> str:
    if isinstance(exc, ModelyardError):
        return f"{exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"
