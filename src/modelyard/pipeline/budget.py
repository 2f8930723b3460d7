"""The training budget: measure what one fit costs (wall time, CPU time, peak memory) and stop it at the
spec's ``[budget]`` bounds.

How it is measured, and why:

- **No budget** (the default): the fit runs in this process. Wall time is ``perf_counter``, CPU time is
  ``process_time`` (every thread of the process), memory is ``getrusage(RUSAGE_SELF).ru_maxrss`` before and
  after: the process's high-water mark and how far the fit raised it. Both cost nothing during the fit,
  unlike ``tracemalloc``, which slows a big fit many times over and misses native (NumPy, OpenMP) buffers.
- **A budget** (``max_seconds`` or ``max_memory_mb``): the fit runs in a child interpreter (``CHILD``).
  A fit cannot be interrupted from inside: scikit-learn spends its time in native code, which neither a
  signal (main thread only, and only between bytecodes) nor a thread can stop; a child can be killed at
  the bound. Its memory is read from outside while it runs
  (``VmHWM``, the kernel's high-water mark, so a spike between two reads is still seen), and its own
  ``getrusage`` gives exact CPU time and peak. A fresh interpreter rather than ``fork``: a forked child of a
  process that already ran OpenMP (HistGradientBoosting) can hang in libgomp, and a multi-threaded server
  must not fork; ``multiprocessing``'s forkserver/spawn re-run the caller's ``__main__``. The cost is the
  child's start (about a second to import scikit-learn, not counted in ``max_seconds``) and one pickle of
  the data there and of the fitted pipeline back.

``max_memory_mb`` bounds the fitting process's peak resident memory, interpreter, libraries and data
included; ``max_seconds`` bounds the fit, counted from the moment the child holds its data.
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.bundle import TrainingCost
from modelyard.errors import BudgetExceededError, SpecError

__all__ = ["Budget", "fit_measured"]

POLL_SECONDS = 0.02
START_TIMEOUT = 120.0
"""Seconds a child may take to start and unpickle its data (not counted in ``max_seconds``)."""
_MIB = 1 << 20 if sys.platform == "darwin" else 1 << 10  # ru_maxrss is bytes on macOS, KiB on Linux


@dataclass(frozen=True)
class Budget:
    max_seconds: float | None = None
    max_memory_mb: float | None = None

    @property
    def limited(self) -> bool:
        return self.max_seconds is not None or self.max_memory_mb is not None


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MIB


def fit_measured(pipeline: Any, X: Any, y: Any, budget: Budget | None = None, *,
                 name: str | None = None) -> tuple[Any, TrainingCost]:
    """Fit ``pipeline`` on ``X``, ``y``; the fitted pipeline and what the fit cost.

    Raises ``BudgetExceededError`` when the fit goes over ``budget`` (the child is killed first); an
    exception of the fit itself is raised as it was."""
    budget = budget or Budget()
    if not budget.limited:
        return _fit_here(pipeline, X, y)
    return _fit_in_child(pipeline, X, y, budget, name)


def _fit_here(pipeline: Any, X: Any, y: Any) -> tuple[Any, TrainingCost]:
    before = _maxrss_mb()
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline.fit(X, y)
    after = _maxrss_mb()
    return pipeline, TrainingCost(wall_seconds=round(time.perf_counter() - wall, 3),
                                  cpu_seconds=round(time.process_time() - cpu, 3),
                                  peak_memory_mb=round(after, 1), memory_growth_mb=round(after - before, 1),
                                  measured_in="process")


CHILD = """
import pickle, resource, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
pipeline, X, y = pickle.loads((folder / "job.pkl").read_bytes())
(folder / "started").touch()
try:
    wall, cpu = time.perf_counter(), time.process_time()
    pipeline.fit(X, y)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    answer = ("done", pipeline, {"wall_seconds": time.perf_counter() - wall,
                                 "cpu_seconds": time.process_time() - cpu, "peak_memory_mb": peak})
except Exception as exc:
    answer = ("failed", exc)
try:
    data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
except Exception as exc:
    data = pickle.dumps(("failed", RuntimeError(f"{type(exc).__name__}: {exc}")))
(folder / "answer.tmp").write_bytes(data)
(folder / "answer.tmp").rename(folder / "answer.pkl")
"""
"""The child's program (``python -c CHILD FOLDER``): load the job, say so, fit, write the answer whole (a
rename, so it is never read half-written). Standard library only, so the child imports no more than the
pipeline's own classes."""


def _high_water_mb(pid: int) -> float | None:
    """The child's peak resident memory so far (Linux ``VmHWM``), in MiB; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _wait(proc: subprocess.Popen[bytes], folder: Path, budget: Budget, name: str | None) -> tuple[Any, ...]:
    """The child's answer once it is done; killed (and ``BudgetExceededError``) at the budget's bounds."""
    started: float | None = None
    launched = time.perf_counter()
    what = f"{name}: " if name else ""
    answer = folder / "answer.pkl"
    while True:
        if answer.exists():
            result: tuple[Any, ...] = pickle.loads(answer.read_bytes())
            return result
        now = time.perf_counter()
        if started is None and (folder / "started").exists():
            started = now
        code = proc.poll()
        if code is not None and not answer.exists():
            err = proc.stderr.read().decode(errors="replace").strip().splitlines() if proc.stderr else []
            raise SpecError(f"{what}the fitting process ended without an answer (exit code {code})"
                            + (f": {err[-1]}" if err else ""))
        if started is None:
            if now - launched > START_TIMEOUT:
                raise SpecError(f"{what}the fitting process did not start within {START_TIMEOUT:g} s")
        elif budget.max_seconds is not None and now - started > budget.max_seconds:
            raise BudgetExceededError(
                f"{what}the fit was stopped after {now - started:.2f} s: the spec's budget allows "
                f"max_seconds = {budget.max_seconds:g}", limit="max_seconds", used=round(now - started, 3),
                allowed=budget.max_seconds, model=name)
        if budget.max_memory_mb is not None:
            peak = _high_water_mb(proc.pid)
            if peak is not None and peak > budget.max_memory_mb:
                raise BudgetExceededError(
                    f"{what}the fit was stopped at {peak:.0f} MiB of memory: the spec's budget allows "
                    f"max_memory_mb = {budget.max_memory_mb:g}", limit="max_memory_mb", used=round(peak, 1),
                    allowed=budget.max_memory_mb, model=name)
        time.sleep(POLL_SECONDS)


def _fit_in_child(pipeline: Any, X: Any, y: Any, budget: Budget, name: str | None) -> tuple[Any, TrainingCost]:
    with tempfile.TemporaryDirectory(prefix="modelyard-fit-") as tmp:
        folder = Path(tmp)
        (folder / "job.pkl").write_bytes(pickle.dumps((pipeline, X, y), protocol=pickle.HIGHEST_PROTOCOL))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(folder)], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            message = _wait(proc, folder, budget, name)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
    if message[0] == "failed":
        raise message[1]
    _, fitted, figures = message
    cost = TrainingCost(wall_seconds=round(figures["wall_seconds"], 3), cpu_seconds=round(figures["cpu_seconds"], 3),
                        peak_memory_mb=round(figures["peak_memory_mb"], 1), measured_in="child",
                        max_seconds=budget.max_seconds, max_memory_mb=budget.max_memory_mb)
    return fitted, cost

