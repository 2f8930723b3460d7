"""Shadow analysis: how the shadow version's logged answers compare with the primary's, request by request.

The server logs the shadow's output under the primary's request id with route ``shadow``. Pairing the two
records gives, on real traffic, the same statistics the differential test computes on reference sets.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from modelyard.checks.compare import gate_predictions
from modelyard.checks.results import GateResult, Tolerances
from modelyard.errors import NotFoundError
from modelyard.predlog import PredictionRecord, list_records
from modelyard.registry import Registry

MAX_RECORDS = 20_000


def output_values(outputs: Any) -> list[Any]:
    """A logged ``outputs`` as one value per row (plain values, or objects holding a ``prediction``)."""
    if isinstance(outputs, dict):
        outputs = outputs.get("predictions", outputs.get("outputs", [outputs]))
    if not isinstance(outputs, list):
        return [outputs]
    values = []
    for item in outputs:
        if isinstance(item, dict):
            item = next((item[k] for k in ("prediction", "label", "value") if k in item), None)
        values.append(item)
    return values


def pair_rows(primary: list[PredictionRecord],
              other: list[PredictionRecord]) -> tuple[list[Any], list[Any], int]:
    """Row-aligned outputs of records sharing a request id; also how many requests paired."""
    by_id = {r.request_id: r for r in primary if r.error is None}
    left: list[Any] = []
    right: list[Any] = []
    paired = 0
    for rec in other:
        base = by_id.get(rec.request_id)
        if base is None or rec.error is not None:
            continue
        a, b = output_values(base.outputs), output_values(rec.outputs)
        if len(a) != len(b):
            continue
        paired += 1
        left.extend(a)
        right.extend(b)
    return left, right, paired


def _p(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def shadow_report(
    registry: Registry,
    name: str,
    *,
    since: datetime | None = None,
    version: int | None = None,
    tolerances: Tolerances | None = None,
    max_records: int = MAX_RECORDS,
) -> GateResult:
    """Agreement of the shadow (``version``, default: the current shadow alias) with the primary."""
    tol = tolerances or Tolerances()
    aliases = registry.aliases(name)
    if version is None:
        if "shadow" not in aliases:
            raise NotFoundError(f"model '{name}' has no shadow alias; pass --version to analyse an older one",
                                model=name)
        version = aliases["shadow"].version
    task = str(registry.get_version(name, version).manifest.get("task", "regression"))
    engine = registry.engine
    shadows = list_records(engine, name, since=since, route="shadow", version=version, limit=max_records)
    result = GateResult("shadow")
    figures: dict[str, Any] = {"model": name, "shadow_version": version, "task": task,
                               "since": since.isoformat() if since else None, "shadow_records": len(shadows)}
    result.figures = figures
    if not shadows:
        result.add("shadow_records", 0, passed=False, detail=f"no shadow records of {name} v{version} logged")
        return result
    first, last = min(r.ts for r in shadows), max(r.ts for r in shadows)
    margin = timedelta(minutes=1)
    primaries = list_records(engine, name, since=first - margin, until=last + margin, route="primary",
                             limit=None)
    errors = sum(r.error is not None for r in shadows)
    figures["shadow_errors"] = errors
    figures["shadow_error_rate"] = errors / len(shadows)
    for label, recs in (("primary", primaries), ("shadow", shadows)):
        lat = [r.latency_ms for r in recs if r.latency_ms is not None and r.error is None]
        figures[f"{label}_latency_ms_p50"], figures[f"{label}_latency_ms_p99"] = _p(lat, 0.5), _p(lat, 0.99)
    left, right, paired = pair_rows(primaries, shadows)
    figures["paired_requests"] = paired
    result.add("shadow_error_rate", figures["shadow_error_rate"])
    if not paired:
        result.add("paired_requests", 0, passed=False,
                   detail="no shadow record has a primary record with the same request id")
        return result
    figures["predictions"] = gate_predictions(result, left, right, task, tol, label="shadow")
    return result
