"""Load and stress tests: an async HTTP load generator with counted, bounded requests.

``run_load`` keeps ``concurrency`` requests in flight for ``duration`` seconds (or until ``max_requests``)
and reports throughput, latency percentiles, status codes and transport errors. Requests in flight when
the time is up are awaited, never cancelled, so every request the server saw is counted here. ``stress``
ramps the concurrency step by step until p99 latency or the error rate crosses its bound; the knee is the
last step within both bounds.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelyard.errors import BadRequestError
from modelyard.predlog import percentile


@dataclass(frozen=True)
class LoadConfig:
    url: str
    concurrency: int = 8
    duration: float = 10.0
    rows: list[dict[str, Any]] | None = None
    """Rows to POST as ``{"instances": [...]}``, cycled; without rows every request is a GET."""
    batch: int = 1
    max_requests: int | None = None
    timeout: float = 10.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    status_codes: dict[str, int]
    errors: dict[str, int]
    throughput_rps: float
    latency_ms: dict[str, float]

    @property
    def failed(self) -> int:
        return self.requests - self.ok

    @property
    def error_rate(self) -> float:
        return self.failed / self.requests if self.requests else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed, "error_rate": self.error_rate}


@dataclass
class StressResult:
    steps: list[LoadResult]
    knee: int | None
    """Highest concurrency still within the bounds (None: the first step already crossed them)."""
    stopped_because: str
    max_p99_ms: float
    max_error_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {"knee": self.knee, "stopped_because": self.stopped_because, "max_p99_ms": self.max_p99_ms,
                "max_error_rate": self.max_error_rate, "steps": [s.to_dict() for s in self.steps]}


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows from a CSV, Parquet, JSON (a list, or ``{"instances": [...]}``) or JSON-lines file."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        frame = frame.astype(object).where(frame.notna(), None)
        records: list[dict[str, Any]] = frame.to_dict("records")
        return records
    text = path.read_text()
    rows: Any
    if suffix in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        rows = data.get("instances") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BadRequestError(f"{path}: expected a list of row objects (or {{\"instances\": [...]}})")
    return rows


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ms = np.asarray(latencies) * 1000
    quantiles = {f"p{round(q * 100)}": percentile(ms, q) or 0.0 for q in (0.5, 0.9, 0.99)}
    return {"mean": float(ms.mean()), **quantiles, "max": float(ms.max())}


async def run_load(config: LoadConfig) -> LoadResult:
    if config.concurrency < 1 or config.duration <= 0:
        raise BadRequestError("concurrency must be at least 1 and duration above 0")
    if httpx.URL(config.url).scheme not in ("http", "https"):
        raise BadRequestError(f"{config.url!r} is not an http(s) URL")
    bodies: list[bytes] | None = None
    if config.rows:
        n, b = len(config.rows), max(1, config.batch)
        bodies = [json.dumps({"instances": [config.rows[(i + j) % n] for j in range(b)]}).encode()
                  for i in range(0, n, b)]
    headers = {"content-type": "application/json", **config.headers}
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    issued = 0
    limits = httpx.Limits(max_connections=config.concurrency, max_keepalive_connections=config.concurrency)
    start = time.perf_counter()
    deadline = start + config.duration

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal issued
        limit = config.max_requests
        while time.perf_counter() < deadline and (limit is None or issued < limit):
            i = issued
            issued += 1
            t0 = time.perf_counter()
            try:
                if bodies is None:
                    resp = await client.get(config.url, headers=config.headers)
                else:
                    resp = await client.post(config.url, content=bodies[i % len(bodies)], headers=headers)
                statuses[str(resp.status_code)] += 1
            except (httpx.HTTPError, OSError) as exc:
                errors[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(timeout=config.timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(config.concurrency)))
    elapsed = time.perf_counter() - start
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    return LoadResult(
        concurrency=config.concurrency, duration_s=elapsed, requests=issued, ok=ok,
        status_codes=dict(sorted(statuses.items())), errors=dict(errors),
        throughput_rps=issued / elapsed if elapsed > 0 else 0.0, latency_ms=_percentiles(latencies),
    )


def load(config: LoadConfig) -> LoadResult:
    """``run_load`` for callers without an event loop (the CLI)."""
    return asyncio.run(run_load(config))


async def run_stress(config: LoadConfig, *, max_p99_ms: float, max_error_rate: float = 0.01,
                     start: int = 1, factor: float = 2.0, max_concurrency: int = 256) -> StressResult:
    """Ramp concurrency (start, start*factor, ...) with ``config.duration`` per step until a bound breaks."""
    steps: list[LoadResult] = []
    knee: int | None = None
    concurrency = max(1, start)
    reason = f"bounds held up to concurrency {max_concurrency}"
    while concurrency <= max_concurrency:
        step = await run_load(LoadConfig(**{**asdict(config), "concurrency": concurrency}))
        steps.append(step)
        p99 = step.latency_ms.get("p99", math.inf)
        if step.error_rate > max_error_rate:
            reason = f"error rate {step.error_rate:.2%} > {max_error_rate:.2%} at concurrency {concurrency}"
            break
        if p99 > max_p99_ms:
            reason = f"p99 {p99:.1f} ms > {max_p99_ms:g} ms at concurrency {concurrency}"
            break
        knee = concurrency
        concurrency = max(concurrency + 1, round(concurrency * factor))
    return StressResult(steps, knee, reason, max_p99_ms, max_error_rate)


def stress(config: LoadConfig, **bounds: Any) -> StressResult:
    return asyncio.run(run_stress(config, **bounds))
