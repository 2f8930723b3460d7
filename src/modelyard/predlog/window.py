"""The typed window API: the log as the monitor, the canary watcher and the shadow report read it.

- ``Route`` and ``decode_outputs`` (from ``records.py``): the routes a record is logged on, and the one
  decoder of logged outputs (one predicted value per row).
- ``LogWindow`` / ``read_window``: one model's records between two times, with views by route and version;
  each record's decoded values are ``record.values``.
- ``pair_by_request``: row-aligned values of two sets of records that share request ids (primary and shadow,
  primary or mirror and canary).
- ``percentile``: the one percentile of latencies and differences (``None`` for no values).

What holds the log stays behind ``store.LogReader`` (SQL or Parquet); this module only shapes what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from modelyard.predlog.records import PredictionRecord, Route, decode_outputs, prediction_value
from modelyard.predlog.store import LogSource, list_records

__all__ = [
    "LogWindow",
    "Paired",
    "Route",
    "decode_outputs",
    "latencies",
    "pair_by_request",
    "percentile",
    "prediction_value",
    "read_window",
    "values_of",
]

def percentile(values: Iterable[float] | np.ndarray, q: float) -> float | None:
    """The ``q`` quantile (0..1, linear interpolation) of ``values``; ``None`` when there are none."""
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype="float64")
    return float(np.quantile(arr, q)) if arr.size else None


def latencies(records: Iterable[PredictionRecord]) -> list[float]:
    """Latencies of the records answered without an error."""
    return [float(r.latency_ms) for r in records if r.latency_ms is not None and r.error is None]


@dataclass
class Paired:
    """Row-aligned values of two record sets sharing request ids: ``left[i]`` and ``right[i]`` are one row."""

    left: list[Any] = field(default_factory=list)
    right: list[Any] = field(default_factory=list)
    requests: int = 0
    """How many requests paired (a request holds one or more rows)."""

    @property
    def rows(self) -> list[tuple[Any, Any]]:
        return list(zip(self.left, self.right, strict=True))

    def __len__(self) -> int:
        return len(self.left)


def pair_by_request(base: Iterable[PredictionRecord], other: Iterable[PredictionRecord]) -> Paired:
    """Pair each record of ``other`` with the ``base`` record of its request id, row by row.

    Failed records on either side, requests without a base record and requests whose two answers hold a
    different number of rows are left out.
    """
    by_id = {r.request_id: r for r in base if r.error is None}
    paired = Paired()
    for rec in other:
        first = by_id.get(rec.request_id)
        if first is None or rec.error is not None:
            continue
        a, b = decode_outputs(first.outputs), decode_outputs(rec.outputs)
        if len(a) != len(b):
            continue
        paired.requests += 1
        paired.left.extend(a)
        paired.right.extend(b)
    return paired


@dataclass
class LogWindow:
    """One model's logged records with ``since <= ts < until``, newest first."""

    model: str
    since: datetime | None
    until: datetime | None
    records: list[PredictionRecord] = field(default_factory=list)

    def on(self, *routes: Route | str, version: int | None = None) -> list[PredictionRecord]:
        """The records logged on any of ``routes`` (all routes when none), of ``version`` when given."""
        wanted = {Route(r) for r in routes}
        return [r for r in self.records
                if (not wanted or r.route in wanted) and (version is None or int(r.version) == version)]

    def versions(self) -> set[int]:
        return {int(r.version) for r in self.records}


def read_window(source: LogSource, model: str, *, since: datetime | None = None, until: datetime | None = None,
                routes: Sequence[Route | str] = (), version: int | None = None,
                limit: int | None = None) -> LogWindow:
    """Read a ``LogWindow`` from ``source`` (a ``LogReader`` of either target, or an engine: the SQL one),
    one query per route asked for, or one."""
    if not routes:
        records = list_records(source, model, since=since, until=until, version=version, limit=limit)
    else:
        records = [rec for route in routes
                   for rec in list_records(source, model, since=since, until=until, route=str(Route(route)),
                                           version=version, limit=limit)]
    return LogWindow(model, since, until, records)


def values_of(records: Sequence[PredictionRecord]) -> list[Any]:
    """The decoded values of every answered row of ``records``."""
    return [v for r in records if r.error is None for v in decode_outputs(r.outputs)]
