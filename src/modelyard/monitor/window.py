"""A window of logged traffic for one model version, as the monitor reads it.

The monitor does not import the prediction log (they are sibling layers): callers hand it records, anything
with the attributes of ``modelyard.predlog.PredictionRecord``. ``RecordSource`` is how the scheduler and the
CLI ask for them, e.g. ``lambda m, since, until: list_records(engine, m, since=since, until=until)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import pandas as pd


class RecordLike(Protocol):
    model: str
    version: int
    route: str
    inputs: Any
    outputs: Any
    n_rows: int
    latency_ms: float | None
    error: str | None
    ts: datetime


RecordSource = Callable[[str, datetime, datetime], Sequence[RecordLike]]
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

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_quantile(self, q: float) -> float | None:
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else None

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.rows) if self.rows else pd.DataFrame()


def prediction_value(output: Any) -> Any:
    """One logged output → the predicted value (scalars as they are; ``{"prediction": ...}`` unwrapped)."""
    if isinstance(output, dict):
        for key in ("prediction", "label", "value"):
            if key in output:
                return output[key]
        return None
    if isinstance(output, list | tuple):
        return output[0] if len(output) == 1 else None
    return output


def split_windows(
    records: Iterable[RecordLike],
    model: str,
    since: datetime,
    until: datetime,
    *,
    include_shadow: bool = True,
) -> dict[int, Window]:
    """Group records by version; newest rows first when a window is longer than ``MAX_ROWS``."""
    windows: dict[int, Window] = {}
    for r in sorted(records, key=lambda r: r.ts, reverse=True):
        if r.model != model or r.route == "mirror" or (r.route == "shadow" and not include_shadow):
            continue
        w = windows.setdefault(int(r.version), Window(model, int(r.version), since, until))
        w.requests += 1
        if r.error:
            w.errors += 1
        if r.latency_ms is not None:
            w.latencies_ms.append(float(r.latency_ms))
        if r.error or len(w.rows) >= MAX_ROWS:
            continue
        inputs = r.inputs if isinstance(r.inputs, list) else [r.inputs] if isinstance(r.inputs, dict) else []
        outputs = r.outputs if isinstance(r.outputs, list) else [] if r.outputs is None else [r.outputs]
        w.rows.extend(row for row in inputs if isinstance(row, dict))
        w.predictions.extend(prediction_value(o) for o in outputs)
    return windows
