"""The benchmark test: candidate against current, in this process, in one run, interleaved.

Both versions are measured in the same process, alternating call by call (and swapping who goes first), so
a noisy neighbour, a CPU frequency change or a warm cache hits both alike. The gate compares ratios, never
absolute times: "the candidate is at most ``max_slowdown`` times slower than what serves today". It also
compares what the two fits cost, from their manifests (``training_cost``): the fit's wall time
(``max_train_slowdown``) and peak memory (``max_train_memory_ratio``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from modelyard.bundle import TrainingCost
from modelyard.checks.results import GateResult, Tolerances
from modelyard.errors import ModelyardError
from modelyard.predlog import percentile
from modelyard.runtime import Model


@dataclass(frozen=True)
class BenchmarkConfig:
    latency_calls: int = 200
    """Single-row predictions per version (each validated like a served request)."""
    throughput_rows: int = 10_000
    throughput_rounds: int = 5
    warmup_calls: int = 5
    threads: int | None = 1
    """Native threads (OpenMP/BLAS) per prediction while measuring; None leaves the library default.
    One thread keeps the ratio stable on a shared machine, where spinning OpenMP threads of a
    one-row prediction can cost 30x (measured: HistGradientBoosting, 1 row, 2 busy cores)."""


def _rows_for(model: Model, *candidates: pd.DataFrame) -> pd.DataFrame:
    """The first reference set this model can read (so both versions score the same rows when possible)."""
    last: ModelyardError | None = None
    for frame in candidates:
        try:
            model.validate(frame.head(5))
            return frame
        except ModelyardError as exc:
            last = exc
    assert last is not None
    raise last


def _timed(fn: Any, arg: Any) -> float:
    start = time.perf_counter()
    fn(arg)
    return time.perf_counter() - start


def measure(current: Model, candidate: Model, config: BenchmarkConfig | None = None) -> dict[str, Any]:
    """Latency of one row and throughput of ``throughput_rows`` rows for both, interleaved."""
    config = config or BenchmarkConfig()
    if config.threads is None:
        return _measure(current, candidate, config)
    with threadpool_limits(limits=config.threads):
        return _measure(current, candidate, config)


def _measure(current: Model, candidate: Model, config: BenchmarkConfig) -> dict[str, Any]:
    ref_cur, ref_cand = current.bundle_.reference_inputs(), candidate.bundle_.reference_inputs()
    frames = {"current": _rows_for(current, ref_cur, ref_cand),
              "candidate": _rows_for(candidate, ref_cur, ref_cand)}
    models = {"current": current, "candidate": candidate}
    singles = {k: f.to_dict("records") for k, f in frames.items()}
    bulk = {k: f.iloc[np.resize(np.arange(len(f)), config.throughput_rows)] for k, f in frames.items()}
    order = ("current", "candidate")
    for i in range(config.warmup_calls):
        for k in order:
            models[k].predict(singles[k][i % len(singles[k])])
    lat: dict[str, list[float]] = {k: [] for k in order}
    for i in range(config.latency_calls):
        for k in order if i % 2 == 0 else order[::-1]:
            lat[k].append(_timed(models[k].predict, singles[k][i % len(singles[k])]))
    tput: dict[str, list[float]] = {k: [] for k in order}
    for i in range(config.throughput_rounds):
        for k in order if i % 2 == 0 else order[::-1]:
            tput[k].append(config.throughput_rows / _timed(models[k].predict, bulk[k]))
    out: dict[str, Any] = {"same_rows": frames["current"] is frames["candidate"], "config": config.__dict__}
    for k in order:
        ms = np.asarray(lat[k]) * 1000
        out[k] = {
            "latency_ms_p50": percentile(ms, 0.5),
            "latency_ms_p90": percentile(ms, 0.9),
            "latency_ms_p99": percentile(ms, 0.99),
            # the best round, as timeit takes the least time: on a shared machine the other rounds measure
            # what else ran, and a gate must not refuse a candidate for its neighbours' work
            "throughput_rows_s": float(np.max(tput[k])),
        }
    out["latency_ratio"] = out["candidate"]["latency_ms_p50"] / out["current"]["latency_ms_p50"]
    out["throughput_slowdown"] = out["current"]["throughput_rows_s"] / out["candidate"]["throughput_rows_s"]
    return out


def training_figures(current: TrainingCost | None, candidate: TrainingCost | None) -> dict[str, Any]:
    """What the two fits cost (their manifests' ``training_cost``) and the ratios the gate bounds.

    Memory is compared only when both fits were measured the same way (``measured_in``): a child process's
    own peak and a whole trainer process's high-water mark are not the same quantity."""
    out: dict[str, Any] = {"current": current.model_dump(exclude_none=True) if current else None,
                           "candidate": candidate.model_dump(exclude_none=True) if candidate else None}
    if current is None or candidate is None:
        out["note"] = "no training cost recorded for " + ("either version" if current is candidate else
                                                          "the current version" if current is None else
                                                          "the candidate")
        return out
    if current.wall_seconds and candidate.wall_seconds is not None:
        out["train_time_ratio"] = candidate.wall_seconds / current.wall_seconds
    if current.measured_in is not None and current.measured_in == candidate.measured_in and \
            current.peak_memory_mb and candidate.peak_memory_mb is not None:
        out["train_memory_ratio"] = candidate.peak_memory_mb / current.peak_memory_mb
    return out


def judge(figures: dict[str, Any], tol: Tolerances) -> GateResult:
    """Turn measured figures into a gate result (kept apart from timing so it can be tested exactly)."""
    result = GateResult("benchmark", figures=figures)
    training = figures.get("training") or {}
    if "train_time_ratio" in training:
        result.bound("train_time_ratio", training["train_time_ratio"], tol.max_train_slowdown,
                     what=f"candidate fit took {training['candidate']['wall_seconds']:.3g} s, "
                          f"{training['train_time_ratio']:.2f}x the current's; ratio")
    if "train_memory_ratio" in training:
        result.bound("train_memory_ratio", training["train_memory_ratio"], tol.max_train_memory_ratio,
                     what=f"candidate fit peaked at {training['candidate']['peak_memory_mb']:.4g} MiB, "
                          f"{training['train_memory_ratio']:.2f}x the current's; ratio")
    result.bound("latency_ratio", figures["latency_ratio"], tol.max_slowdown,
                 what=f"candidate p50 latency {figures['candidate']['latency_ms_p50']:.3g} ms is "
                      f"{figures['latency_ratio']:.2f}x the current's; ratio")
    result.bound("throughput_slowdown", figures["throughput_slowdown"], tol.max_slowdown,
                 what=f"candidate throughput {figures['candidate']['throughput_rows_s']:.4g} rows/s is "
                      f"{figures['throughput_slowdown']:.2f}x slower than the current's; ratio")
    return result


def benchmark_test(current: Model, candidate: Model, tol: Tolerances | None = None,
                   config: BenchmarkConfig | None = None) -> GateResult:
    figures = measure(current, candidate, config)
    figures["training"] = training_figures(current.bundle_.manifest.training_cost,
                                           candidate.bundle_.manifest.training_cost)
    return judge(figures, tol or Tolerances())
