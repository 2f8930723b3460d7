"""Shadow analysis: how the shadow version's logged answers compare with the primary's, request by request.

The server logs the shadow's output under the primary's request id with route ``shadow``. Pairing the two
records gives, on real traffic, the same statistics the differential test computes on reference sets.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from modelyard.checks.compare import gate_predictions
from modelyard.checks.results import GateResult, Tolerances
from modelyard.errors import NotFoundError
from modelyard.predlog import Route, latencies, list_records, log_reader, pair_by_request, percentile
from modelyard.registry import Registry

MAX_RECORDS = 20_000


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
        if Route.SHADOW not in aliases:
            raise NotFoundError(f"model '{name}' has no shadow alias; pass --version to analyse an older one",
                                model=name)
        version = aliases[Route.SHADOW].version
    task: str = registry.get_version(name, version).manifest.task
    source = log_reader(registry.settings, registry.engine)
    shadows = list_records(source, name, since=since, route=Route.SHADOW, version=version, limit=max_records)
    result = GateResult("shadow")
    figures: dict[str, Any] = {"model": name, "shadow_version": version, "task": task,
                               "since": since.isoformat() if since else None, "shadow_records": len(shadows)}
    result.figures = figures
    if not shadows:
        result.add("shadow_records", 0, passed=False, detail=f"no shadow records of {name} v{version} logged")
        return result
    first, last = min(r.ts for r in shadows), max(r.ts for r in shadows)
    margin = timedelta(minutes=1)
    primaries = list_records(source, name, since=first - margin, until=last + margin, route=Route.PRIMARY,
                             limit=None)
    errors = sum(r.error is not None for r in shadows)
    figures["shadow_errors"] = errors
    figures["shadow_error_rate"] = errors / len(shadows)
    for label, recs in (("primary", primaries), ("shadow", shadows)):
        lat = latencies(recs)
        figures[f"{label}_latency_ms_p50"] = percentile(lat, 0.5)
        figures[f"{label}_latency_ms_p99"] = percentile(lat, 0.99)
    paired = pair_by_request(primaries, shadows)
    figures["paired_requests"] = paired.requests
    result.add("shadow_error_rate", figures["shadow_error_rate"])
    if not paired.requests:
        result.add("paired_requests", 0, passed=False,
                   detail="no shadow record has a primary record with the same request id")
        return result
    figures["predictions"] = gate_predictions(result, paired.left, paired.right, task, tol,
                                             label="shadow")
    return result
