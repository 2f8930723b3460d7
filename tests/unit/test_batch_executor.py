"""The batch run's stages: chunks scored on one thread per core, written in input order, the first error
stopping the run."""

from __future__ import annotations

import threading
import time

import numpy as np
import pandas as pd
import pytest
import sklearn.ensemble  # noqa: F401 (loads scikit-learn's OpenMP runtime, whose limit is per thread)
from threadpoolctl import threadpool_info

from modelyard.batch.chunk import ScoredChunk
from modelyard.batch.executor import LocalExecutor, run_stages
from modelyard.runtime import fastpath


def frames(n: int, size: int = 10) -> list[pd.DataFrame]:
    return [pd.DataFrame({"x": np.arange(i * size, (i + 1) * size, dtype=np.float64)}) for i in range(n)]


def scored(frame: pd.DataFrame, offset: int) -> ScoredChunk:
    return ScoredChunk(keys=np.arange(offset, offset + len(frame)), predictions=frame["x"].to_numpy() * 2,
                       probabilities=None)


def test_chunks_are_scored_side_by_side_and_written_in_input_order() -> None:
    both = threading.Barrier(2, timeout=10)  # passes only when two chunks are being scored at once
    seen: list[tuple[int, str, bool, int]] = []

    def fn(frame: pd.DataFrame, offset: int) -> ScoredChunk:
        if offset < 20:
            both.wait()
        time.sleep(0.02 if offset // 10 % 2 == 0 else 0.0)  # even chunks finish after the next odd one
        threads = max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"), default=1)
        seen.append((offset, threading.current_thread().name, getattr(fastpath._CALLER, "alone", False),
                     threads))
        return scored(frame, offset)

    written: list[tuple[int, ScoredChunk]] = []
    executor = LocalExecutor(fn, threads=1, workers=2)
    try:
        run_stages(iter(frames(12)), executor, lambda offset, chunk: written.append((offset, chunk)),
                   lambda frame, offset: None)
    finally:
        executor.close()
    assert [offset for offset, _ in written] == list(range(0, 120, 10))
    np.testing.assert_array_equal(np.concatenate([c.keys for _, c in written]), np.arange(120))
    np.testing.assert_array_equal(np.concatenate([c.predictions for _, c in written]), np.arange(120) * 2.0)
    assert {name for _, name, _, _ in seen} == {"batch-score_0", "batch-score_1"}
    assert all(alone for _, _, alone, _ in seen), "a scoring thread would cut its ONNX calls in two"
    assert all(threads == 1 for *_, threads in seen), "a scoring thread kept OpenMP's default team"


def test_the_first_scoring_error_stops_the_run_and_nothing_after_it_is_written() -> None:
    def fn(frame: pd.DataFrame, offset: int) -> ScoredChunk:
        if offset == 30:
            raise ValueError("chunk at 30 is bad")
        return scored(frame, offset)

    written: list[int] = []
    executor = LocalExecutor(fn, workers=2)
    try:
        with pytest.raises(ValueError, match="chunk at 30 is bad"):
            run_stages(iter(frames(50)), executor, lambda offset, chunk: written.append(offset),
                       lambda frame, offset: None)
    finally:
        executor.close()
    assert written == [0, 10, 20]
