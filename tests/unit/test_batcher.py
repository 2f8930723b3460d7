"""The micro-batcher: bounded batches, every caller its own rows' answers, failures kept to one batch."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelyard.config import Settings
from modelyard.errors import PredictionError, SchemaError
from modelyard.runtime.batcher import BatchConfig, BatchRecord, MicroBatcher, batch_config
from modelyard.runtime.columns import Columns


class Recorder:
    """A predict function that answers ``2 * x + 1`` per row and records every batch it was given."""

    def __init__(self, fail_if: Callable[[np.ndarray], bool] | None = None, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.fail_if = fail_if
        self.delay = delay
        self.lock = threading.Lock()
        self.threads: set[str] = set()

    def __call__(self, rows: Any) -> np.ndarray:
        x = rows.data["x"] if isinstance(rows, Columns) else rows["x"].to_numpy()
        with self.lock:
            self.sizes.append(len(x))
            self.threads.add(threading.current_thread().name)
        if self.delay:
            threading.Event().wait(self.delay)  # a model that takes a while: requests pile up meanwhile
        if self.fail_if is not None and self.fail_if(x):
            raise ValueError(f"cannot predict x={x.min()}..{x.max()}")
        return 2 * x + 1


def columns(values: list[float]) -> Columns:
    return Columns({"x": np.asarray(values, dtype=np.float64)}, len(values))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_callers_each_get_exactly_their_own_rows_and_batches_stay_bounded() -> None:
    model = Recorder(delay=0.002)

    async def main() -> None:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=16, max_wait_ms=5))
        # 300 callers with 1 to 7 distinct rows each, all at once
        requests = [[1000.0 * i + j for j in range(1 + i % 7)] for i in range(300)]
        answers = await asyncio.gather(*(batcher.submit(columns(r)) for r in requests))
        for rows, answer in zip(requests, answers, strict=True):
            assert answer.tolist() == [2 * v + 1 for v in rows]
        stats = batcher.stats()
        assert stats.requests == 300 and stats.rows == sum(len(r) for r in requests)
        assert stats.largest_batch_rows <= 16
        await batcher.aclose()

    run(main())
    assert max(model.sizes) <= 16
    assert len(model.sizes) < 300, "concurrent requests were not coalesced"
    assert all(name.startswith("batch-") for name in model.threads), "predict ran on the event loop"


def test_a_request_larger_than_the_max_is_split_and_put_back_together_in_order() -> None:
    model = Recorder()

    async def main() -> np.ndarray:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=10, max_wait_ms=0))
        small = batcher.submit(columns([-1.0]))
        big = batcher.submit(columns([float(i) for i in range(95)]))
        got_small, got_big = await asyncio.gather(small, big)
        assert got_small.tolist() == [-1.0]
        await batcher.aclose()
        return got_big

    got = run(main())
    assert got.tolist() == [2.0 * i + 1 for i in range(95)]
    assert max(model.sizes) <= 10


def test_dataframes_are_batched_too() -> None:
    model = Recorder()

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=8))
        frames = [pd.DataFrame({"x": [float(i), float(i) + 0.5]}) for i in range(20)]
        out = await asyncio.gather(*(batcher.submit(f) for f in frames))
        await batcher.aclose()
        return out

    for i, answer in enumerate(run(main())):
        assert answer.tolist() == [2.0 * i + 1, 2.0 * (i + 0.5) + 1]
    assert max(model.sizes) <= 8


def test_an_exception_fails_only_the_callers_in_that_batch() -> None:
    # rows >= 1000 poison their batch; batches are formed while a slow predict runs
    model = Recorder(fail_if=lambda x: bool((x >= 1000).any()), delay=0.005)
    failed_batches: list[BatchRecord] = []

    async def main() -> list[Any]:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=4, max_wait_ms=0),
                               observer=lambda r: failed_batches.append(r) if r.error else None)
        values = [float(i) if i != 13 else 1000.0 for i in range(40)]
        out = await asyncio.gather(*(batcher.submit(columns([v])) for v in values), return_exceptions=True)
        await batcher.aclose()
        return out

    results = run(main())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors, "the poisoned row did not fail"
    assert len(failed_batches) == 1 and len(errors) == failed_batches[0].requests <= 4
    assert isinstance(results[13], PredictionError)
    assert "cannot predict" in str(results[13]) and "batch" in str(results[13])
    assert len({id(e) for e in errors}) == len(errors), "callers share one exception object"
    for i, r in enumerate(results):
        if not isinstance(r, BaseException):
            assert r.tolist() == [2.0 * i + 1]


def test_our_own_errors_reach_the_caller_with_their_type_and_context() -> None:
    def predict(rows: Any) -> np.ndarray:
        raise SchemaError("column 'x' row 0: bad", field="x", row=0)

    async def main() -> None:
        batcher = MicroBatcher(predict)
        with pytest.raises(SchemaError) as err:
            await batcher.submit(columns([1.0]))
        assert err.value.field == "x"
        await batcher.aclose()

    run(main())


def test_a_caller_that_gives_up_does_not_disturb_the_others() -> None:
    model = Recorder(delay=0.01)

    async def main() -> None:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=4, max_wait_ms=0))
        tasks = [asyncio.ensure_future(batcher.submit(columns([float(i)]))) for i in range(12)]
        await asyncio.sleep(0)
        tasks[5].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[5], asyncio.CancelledError)
        for i, r in enumerate(results):
            if i != 5:
                assert r.tolist() == [2.0 * i + 1]
        await batcher.aclose()

    run(main())


def test_no_wait_budget_when_idle_and_a_bounded_one_under_load() -> None:
    async def main() -> None:
        batcher = MicroBatcher(Recorder(delay=0.003), BatchConfig(max_batch_rows=64, max_wait_ms=2))
        assert batcher.wait_budget() == 0.0  # nothing known yet: never wait
        await batcher.submit(columns([1.0]))
        await asyncio.sleep(0.05)
        await batcher.submit(columns([2.0]))  # arrivals 50 ms apart: sparse, no waiting
        assert batcher.wait_budget() == 0.0
        for _ in range(5):  # bursts of simultaneous arrivals: waiting pays
            await asyncio.gather(*(batcher.submit(columns([float(i)])) for i in range(40)))
        budget = batcher.wait_budget()
        assert 0.0 < budget <= 0.002
        stats = batcher.stats()
        assert stats.cost_per_call_seconds is not None and stats.batches >= 2
        assert sum(stats.batch_rows_histogram.values()) == stats.batches
        await batcher.aclose()

    run(main())


def test_tuple_results_are_split_per_caller() -> None:
    def predict(rows: Any) -> tuple[np.ndarray, np.ndarray]:
        x = rows.data["x"]
        return x * 10, np.stack([x, -x], axis=1)

    async def main() -> None:
        batcher = MicroBatcher(predict, BatchConfig(max_batch_rows=3))
        out = await asyncio.gather(*(batcher.submit(columns([float(i), float(i) + 0.1])) for i in range(5)))
        for i, (labels, proba) in enumerate(out):
            assert labels.tolist() == [10.0 * i, 10.0 * (i + 0.1)]
            assert proba.shape == (2, 2) and proba[0].tolist() == [float(i), -float(i)]
        await batcher.aclose()

    run(main())


def test_a_wrong_number_of_answers_is_an_error_not_a_shifted_result() -> None:
    async def main() -> None:
        batcher = MicroBatcher(lambda rows: np.zeros(len(rows) + 1))
        with pytest.raises(PredictionError, match="answers"):
            await batcher.submit(columns([1.0, 2.0]))
        await batcher.aclose()

    run(main())


def test_config_comes_from_settings_with_per_model_overrides() -> None:
    settings = Settings(batch_max_rows=100, batch_max_wait_ms=1.5,
                        batch_per_model={"m": {"max_batch_rows": 7}})
    assert batch_config(settings, "m") == BatchConfig(max_batch_rows=7, max_wait_ms=1.5)
    assert batch_config(settings, "other") == BatchConfig(max_batch_rows=100, max_wait_ms=1.5)
    with pytest.raises(ValueError):
        BatchConfig(max_batch_rows=0)


def test_one_stalled_batch_does_not_send_the_next_ones_to_a_thread() -> None:
    from modelyard.runtime.batcher import _CostModel

    cost = _CostModel()
    for _ in range(50):
        cost.observe(1, 100e-6)
    cost.observe(1, 0.020)  # a 20 ms stall (a collection, a stolen time slice)
    per_call, _ = cost.fit() or (None, None)
    assert per_call is not None and per_call < 200e-6  # unclipped: ~1.9 ms, past inline_max_ms (1 ms)
    for _ in range(60):  # a lasting change of cost still comes through
        cost.observe(1, 2e-3)
    per_call, _ = cost.fit() or (None, None)
    assert per_call is not None and per_call > 1.5e-3
    fresh = _CostModel()
    fresh.observe(1, 0.050)  # the first batches (warm-up) are taken as they are
    assert (fresh.fit() or (0.0, 0.0))[0] == pytest.approx(0.050)


def test_a_lone_callers_request_is_predicted_in_its_own_turn_once_its_cost_is_known() -> None:
    """``alone`` (no other request in flight): with nothing queued or running and a batch cheap enough to
    run inline, the caller predicts at once, without giving up its turn (counted as a one-request batch);
    the first request, whose cost nobody knows yet, and callers in flight together go through the dispatcher."""
    model = Recorder()

    def at_once(coro: Any) -> Any:
        """The coroutine's result if it finished without suspending; AssertionError otherwise."""
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()
        raise AssertionError("the request waited for another turn of the loop")

    async def main() -> None:
        batcher = MicroBatcher(model, BatchConfig(max_batch_rows=16, inline_max_ms=50))
        # its cost is not known yet: the dispatcher sends it to a thread
        assert (await batcher.submit(columns([1.0]), alone=True)).tolist() == [3.0]
        assert model.threads != {threading.current_thread().name}
        await asyncio.sleep(0.01)  # that batch's task finishes
        for i in range(5):
            assert at_once(batcher.submit(columns([float(i), 10.0]), alone=True)).tolist() == [2 * i + 1, 21.0]
        # callers in flight together are batched as before, alone or not
        answers = await asyncio.gather(batcher.submit(columns([1.0])), *(
            batcher.submit(columns([float(i)]), alone=True) for i in range(2, 6)))
        assert [a.tolist() for a in answers] == [[3.0], [5.0], [7.0], [9.0], [11.0]]
        await batcher.aclose()

    run(main())
    assert model.sizes[-6:] == [2] * 5 + [5], "the lone requests or the callers in flight together"


def test_a_lone_callers_failure_reaches_it_as_a_batch_failure_would() -> None:
    model = Recorder(fail_if=lambda x: bool((x < 0).any()))

    async def main() -> None:
        batcher = MicroBatcher(model, BatchConfig(inline_max_ms=50))
        await batcher.submit(columns([1.0]))  # its cost is known from here on
        with pytest.raises(PredictionError, match=r"1 requests, 1 rows.*ValueError: cannot predict"):
            await batcher.submit(columns([-1.0]), alone=True)
        assert (await batcher.submit(columns([2.0]), alone=True)).tolist() == [5.0]
        assert batcher.stats().failed_batches == 1
        await batcher.aclose()

    run(main())


def test_arrival_gaps_and_queue_waits_keep_their_sub_millisecond_size_under_uvloop() -> None:
    """uvloop's ``loop.time()`` counts whole milliseconds and stands still within a turn of the loop: the
    batcher keeps its own clock, so a gap of a fraction of a millisecond is seen as one (the wait budget
    depends on it) and a queue wait is measured, not rounded to 0 or 1 ms."""
    uvloop = pytest.importorskip("uvloop")
    records: list[BatchRecord] = []

    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    async def main() -> float | None:
        batcher = MicroBatcher(Recorder(), BatchConfig(max_batch_rows=64, max_wait_ms=5, inline_max_ms=0),
                               observer=records.append)
        futures = []
        for i in range(4):  # one turn of the loop: no await between the arrivals
            futures.append(batcher._enqueue(columns([float(i)]), 1))
            spin(0.0003)
        await asyncio.gather(*futures)
        await batcher.aclose()
        return batcher._gap

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        gap = runner.run(main())
    assert gap is not None and 0.0003 <= gap < 0.003, gap  # three gaps of at least 0.3 ms each
    waits = [w for record in records for w in record.queue_waits]
    assert len(waits) == 4, waits
    # queued 0.3 ms apart within one turn, started together: each waited 0.3 ms less than the one before
    assert all(a - b >= 0.0003 for a, b in itertools.pairwise(waits)), waits
