"""The ``/dashboard`` page: one HTML page with vendored Chart.js, fed by ``dashboard_data()`` as JSON.

Nothing to build: ``static/`` holds the page, its script and style, and Chart.js's UMD file as published on
npm. The server serves ``dashboard_html()`` at ``/dashboard`` and ``dashboard_data(...)`` at the data URL;
with ``static_url=None`` the scripts are inlined, so a single route is enough.

Request rate, errors and latency come from the prediction log's scalar columns, read through the prediction
store's ``traffic`` query: only time, version, route, latency and error, never the logged rows. Drift comes
from the scheduler's last run (``drift=``) or is computed on the spot from ``records=``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.monitor.alert_state import AlertBook
from modelyard.monitor.alerts import load_overrides, rules_for
from modelyard.monitor.drift import PREDICTION, DriftReport
from modelyard.monitor.fleet import read_fleet
from modelyard.monitor.quality import headline_metric, live_quality
from modelyard.monitor.window import RecordSource
from modelyard.predlog import Route, percentile
from modelyard.registry import Registry
from modelyard.registry.db import Engine
from modelyard.registry.lease import as_utc
from modelyard.registry.predictions import SqlPredictionStore

STATIC = Path(__file__).parent / "static"
ASSETS = ("chart.umd.min.js", "dashboard.js")


def static_dir() -> Path:
    """Serve this folder at ``static_url`` (e.g. Starlette ``StaticFiles(directory=static_dir())``)."""
    return STATIC


@cache
def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def dashboard_html(data_url: str = "/dashboard/data", static_url: str | None = None) -> str:
    """The page; scripts and style linked under ``static_url``, or inlined when it is None."""
    page = _read("dashboard.html").replace("{{DATA_URL}}", data_url)
    if static_url is None:
        style = f"<style>{_read('dashboard.css')}</style>"
        scripts = "".join(f"<script>{_read(a)}</script>" for a in ASSETS)
    else:
        base = static_url.rstrip("/")
        style = f'<link rel="stylesheet" href="{base}/dashboard.css">'
        scripts = "".join(f'<script src="{base}/{a}"></script>' for a in ASSETS)
    return page.replace("<!--STYLE-->", style).replace("<!--SCRIPTS-->", scripts)


def dashboard_data(
    registry: Registry,
    engine: Engine | None = None,
    *,
    window: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    buckets: int = 30,
    drift: Mapping[tuple[str, int], DriftReport | None] | None = None,
    records: RecordSource | None = None,
    models: list[str] | None = None,
) -> dict[str, Any]:
    """Everything the page draws, for every model (or ``models``), JSON-ready."""
    engine = engine or registry.engine
    now = now or datetime.now(UTC)
    since = now - window
    book = AlertBook(engine)
    out = []
    for name in models or registry.models():
        aliases = registry.aliases(name)
        versions = registry.versions(name)
        if not versions:
            continue
        ref = aliases.get("production") or next(iter(aliases.values()), None)
        manifest = registry.get_version(name, ref.version if ref else versions[-1].version).manifest
        rules = rules_for(manifest, load_overrides(engine, name))
        served = {a.version for a in aliases.values()}
        out.append(
            {
                "name": name,
                "aliases": [
                    {"alias": a.alias, "version": a.version, "weight": a.weight}
                    for a in sorted(aliases.values(), key=lambda a: (a.alias != "production", a.alias))
                ],
                "canary_weight": aliases["canary"].weight if "canary" in aliases else None,
                "versions": [
                    {"version": v.version, "created_at": v.created_at.isoformat(), "created_by": v.created_by}
                    for v in versions[-10:]
                ],
                **_traffic(engine, name, since, now, buckets),
                "thresholds": {
                    "psi": rules["input_drift"]["psi"],
                    "error_rate": rules["error_rate"]["max_rate"],
                    "latency_p95_ms": rules["latency"]["p95_ms"],
                },
                "drift": _drift(registry, name, served, now, window, drift, records),
                "quality": _quality(registry, name, served, since, now),
                "alerts": [_jsonable(a) for a in book.recent(name, limit=15)],
                "events": [_jsonable(vars(e)) for e in registry.events(name, limit=15)],
            }
        )
    return {"generated_at": now.isoformat(), "window_seconds": window.total_seconds(), "models": out,
            "fleet": read_fleet(registry, since=max(window, timedelta(hours=1)), now=now)}


def _quality(registry: Registry, model: str, versions: set[int], since: datetime,
             now: datetime) -> list[dict[str, Any]]:
    """Per served version: the headline live metric over time beside the bundle's held-out figure, the
    labelled rows and, for classifiers, the CBPE estimate of accuracy."""
    out = []
    for version in sorted(versions):
        manifest = registry.get_version(model, version).manifest
        q = live_quality(registry.engine, manifest, model, version, since, now)
        name = headline_metric(manifest.task)
        out.append({"version": version, "metric": name, "live": q.metrics.get(name),
                    "heldout": q.heldout.get(name), "labelled": q.labelled, "late": q.late,
                    "delay_p50_s": q.delay_p50_s, "estimated_accuracy": q.estimated.get("accuracy_labelled"),
                    "series": q.series})
    return out


def _traffic(engine: Engine, model: str, since: datetime, now: datetime, buckets: int) -> dict[str, Any]:
    rows = SqlPredictionStore(engine).traffic(model, since, now)
    width = (now - since).total_seconds() / buckets
    start = since.timestamp()
    edges = [start + (i + 0.5) * width for i in range(buckets)]
    ts = np.array([r.ts.timestamp() for r in rows], dtype="float64")
    idx = (
        np.clip(((ts - start) // width).astype(int), 0, buckets - 1) if len(rows) else np.zeros(0, dtype=int)
    )
    version = np.array([r.version for r in rows], dtype=int)
    route = np.array([r.route for r in rows], dtype=object)
    latency = np.array([np.nan if r.latency_ms is None else r.latency_ms for r in rows], dtype="float64")
    failed = np.array([r.failed for r in rows], dtype=bool)
    counted = (route != Route.SHADOW) & (route != Route.MIRROR)  # extra work after the answer, not user traffic
    per_version = {
        str(v): [float(np.sum((idx == b) & (version == v) & counted)) / width for b in range(buckets)]
        for v in sorted(set(version[counted].tolist()))
    }
    error_rate, p50, p95 = [], [], []
    for b in range(buckets):
        sel = (idx == b) & counted
        n = int(sel.sum())
        error_rate.append(float(failed[sel].mean()) if n else None)
        lat = latency[sel & ~np.isnan(latency)]
        p50.append(percentile(lat, 0.5))
        p95.append(percentile(lat, 0.95))
    split: dict[tuple[int, str], int] = {}
    for v, r in zip(version.tolist(), route.tolist(), strict=True):
        split[(v, r)] = split.get((v, r), 0) + 1
    live = latency[counted & ~np.isnan(latency)]
    n_live = int(counted.sum())
    return {
        "totals": {
            "requests": n_live,
            "rate_per_s": n_live / max((now - since).total_seconds(), 1.0),
            "error_rate": float(failed[counted].mean()) if n_live else None,
            "latency_p50_ms": percentile(live, 0.5),
            "latency_p95_ms": percentile(live, 0.95),
        },
        "traffic_split": [{"version": v, "route": r, "requests": n} for (v, r), n in sorted(split.items())],
        "series": {
            "t": edges,
            "t_range": [start, now.timestamp()],  # the time axis spans the window even with no traffic
            "requests_per_s": per_version,
            "error_rate": error_rate,
            "latency_p50_ms": p50,
            "latency_p95_ms": p95,
        },
    }


def _drift(
    registry: Registry,
    name: str,
    served: set[int],
    now: datetime,
    window: timedelta,
    drift: Mapping[tuple[str, int], DriftReport | None] | None,
    records: RecordSource | None,
) -> list[dict[str, Any]]:
    reports: dict[int, DriftReport | None] = {}
    if drift is not None:
        reports = {v: r for (m, v), r in drift.items() if m == name}
    elif records is not None and served:
        from modelyard.monitor.alerting import AlertRuleSet

        alerts = AlertRuleSet(registry, records, window=window)
        reports = {st.window.version: st.drift for st in alerts.evaluate(name, served, now)}
    out = []
    for version, report in sorted(reports.items()):
        if report is None:
            continue
        feats = sorted(report.all(), key=lambda f: -(f.psi or 0))
        out.append(
            {
                "version": version,
                "rows": report.rows,
                "features": [
                    {
                        "feature": "prediction" if f.feature == PREDICTION else f.feature,
                        "psi": _num(f.psi),
                        "ks": _num(f.ks),
                    }
                    for f in feats
                ],
            }
        )
    return out



def _num(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (as_utc(v).isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
