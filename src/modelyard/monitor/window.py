"""A window of logged traffic for one model version, as the monitor's alert rules read it.

``RecordSource`` is how the scheduler and the CLI ask the log for records, e.g.
``predlog.window_source(engine)``; ``split_windows`` groups them into one ``Window`` per version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from modelyard.predlog import PredictionRecord, Route, percentile

if TYPE_CHECKING:
    from modelyard.monitor.drift import DriftReport
    from modelyard.monitor.quality import LiveQuality

__all__ = ["MAX_ROWS", "RecordSource", "Window", "split_windows"]

RecordSource = Callable[[str, datetime, datetime], Sequence[PredictionRecord]]
MAX_ROWS = 50_000  # rows of inputs kept per window: enough for stable PSI, cheap to hold


@dataclass
class Window:
    """The traffic of one model version between ``since`` and ``until``."""

    model: str
    version: int
    since: datetime
    until: datetime
    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[Any] = field(default_factory=list)
    drift: DriftReport | None = None
    """Set by the alert rule set when the window had traffic: the drift rules read it."""
    quality: LiveQuality | None = None
    """Set by the alert rule set: the version's quality on labelled rows (the performance rule reads it)."""
    records: list[PredictionRecord] = field(default_factory=list)
    """The window's records of this version (for label coverage and the CBPE estimate)."""

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_quantile(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.rows) if self.rows else pd.DataFrame()


def split_windows(
    records: Iterable[PredictionRecord],
    model: str,
    since: datetime,
    until: datetime,
    *,
    include_shadow: bool = True,
) -> dict[int, Window]:
    """Group records by version; newest rows first when a window is longer than ``MAX_ROWS``."""
    windows: dict[int, Window] = {}
    for r in sorted(records, key=lambda r: r.ts, reverse=True):
        if r.model != model or r.route == Route.MIRROR or (r.route == Route.SHADOW and not include_shadow):
            continue
        w = windows.setdefault(int(r.version), Window(model, int(r.version), since, until))
        w.requests += 1
        w.records.append(r)
        if r.error:
            w.errors += 1
        if r.latency_ms is not None:
            w.latencies_ms.append(float(r.latency_ms))
        if r.error or len(w.rows) >= MAX_ROWS:
            continue
        inputs = r.inputs if isinstance(r.inputs, list) else [r.inputs] if isinstance(r.inputs, dict) else []
        w.rows.extend(row for row in inputs if isinstance(row, dict))
        w.predictions.extend(r.values)
    return windows
