"""Alert rules and their state: evaluated on a window of traffic, recorded in ``my_alerts``.

Rules and their defaults (``DEFAULT_RULES``) are refined by the bundle (the expected prediction range is the
output schema's observed range; a ``monitoring.rules`` section in the manifest, if any) and then by the
model's settings in the registry (``my_models.settings["monitor"]["rules"]``), so an operator can tune one
model without republishing it.

State is a small machine per alert key (model, version, rule, feature): ``ok → firing`` records a row and
notifies once; evaluations while it keeps firing update the row and notify nothing (deduplicated);
``firing → resolved`` closes the row and sends a resolve message. A window with too little traffic is
"unknown" and changes nothing, so a quiet night does not resolve a real alert.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, and_, insert, select, update

from modelyard.errors import BadRequestError, ModelNotFoundError
from modelyard.monitor.drift import PREDICTION, DriftReport
from modelyard.monitor.window import Window
from modelyard.registry import tables as t

DEFAULT_RULES: dict[str, dict[str, Any]] = {
    "prediction_range": {
        "enabled": True,
        "low": None,
        "high": None,
        "max_fraction": 0.01,
        "min_rows": 20,
        "severity": "critical",
    },
    "input_drift": {"enabled": True, "psi": 0.2, "ks": None, "min_rows": 200, "severity": "warning"},
    "prediction_drift": {"enabled": True, "psi": 0.2, "min_rows": 200, "severity": "warning"},
    "error_rate": {"enabled": True, "max_rate": 0.05, "min_requests": 20, "severity": "critical"},
    "latency": {"enabled": True, "p95_ms": 500.0, "min_requests": 20, "severity": "warning"},
}


def rules_for(
    manifest: dict[str, Any], overrides: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """Defaults, then what the bundle knows, then the model's overrides."""
    rules = copy.deepcopy(DEFAULT_RULES)
    output = manifest.get("output_schema") or {}
    if output.get("task", manifest.get("task")) == "classification" or output.get("classes") is not None:
        rules["prediction_range"]["classes"] = [str(c) for c in output.get("classes") or []]
    else:
        rules["prediction_range"]["low"] = output.get("min")
        rules["prediction_range"]["high"] = output.get("max")
    for layer in ((manifest.get("monitoring") or {}).get("rules") or {}, overrides or {}):
        for rule, params in layer.items():
            if rule not in rules:
                raise BadRequestError(f"unknown alert rule '{rule}' (known: {', '.join(DEFAULT_RULES)})")
            rules[rule].update(params)
    return rules


@dataclass
class Finding:
    """One rule's verdict on one version: ``firing`` is True, False, or None (too little data to say)."""

    model: str
    version: int
    rule: str
    firing: bool | None
    value: float | None
    threshold: float | None
    message: str
    feature: str | None = None
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.rule}:{self.feature}" if self.feature else self.rule


def evaluate_rules(
    rules: dict[str, dict[str, Any]], window: Window, drift: DriftReport | None
) -> list[Finding]:
    out: list[Finding] = []
    m, v = window.model, window.version
    r = rules["prediction_range"]
    if r["enabled"]:
        out.append(_range_finding(r, window))
    r = rules["error_rate"]
    if r["enabled"]:
        enough = window.requests >= r["min_requests"]
        rate = window.error_rate
        out.append(
            Finding(
                m,
                v,
                "error_rate",
                rate > r["max_rate"] if enough else None,
                rate,
                r["max_rate"],
                f"{m} v{v}: {window.errors} of {window.requests} requests failed ({rate:.1%})",
                severity=r["severity"],
            )
        )
    r = rules["latency"]
    if r["enabled"]:
        p95 = window.latency_quantile(0.95)
        enough = len(window.latencies_ms) >= r["min_requests"] and p95 is not None
        out.append(
            Finding(
                m,
                v,
                "latency",
                (p95 > r["p95_ms"]) if enough else None,
                p95,
                r["p95_ms"],
                f"{m} v{v}: p95 latency {p95 or 0:.1f} ms (limit {r['p95_ms']:.0f} ms)",
                severity=r["severity"],
            )
        )
    if drift is not None:
        r = rules["input_drift"]
        for fd in drift.features.values() if r["enabled"] else ():
            over_psi = fd.psi is not None and fd.psi > r["psi"]
            over_ks = r.get("ks") is not None and fd.ks is not None and fd.ks > r["ks"]
            enough = fd.n >= r["min_rows"] and fd.psi is not None
            out.append(
                Finding(
                    m,
                    v,
                    "input_drift",
                    (over_psi or over_ks) if enough else None,
                    fd.psi,
                    r["psi"],
                    f"{m} v{v}: input '{fd.feature}' drifted, PSI {fd.psi or 0:.3f} "
                    f"(limit {r['psi']}), KS {fd.ks if fd.ks is not None else float('nan'):.3f}",
                    feature=fd.feature,
                    severity=r["severity"],
                    details={"ks": fd.ks, "n": fd.n},
                )
            )
        r = rules["prediction_drift"]
        fd = drift.prediction
        if r["enabled"] and fd is not None:
            enough = fd.n >= r["min_rows"] and fd.psi is not None
            out.append(
                Finding(
                    m,
                    v,
                    "prediction_drift",
                    (fd.psi > r["psi"]) if enough else None,  # type: ignore[operator]
                    fd.psi,
                    r["psi"],
                    f"{m} v{v}: predictions drifted, PSI {fd.psi or 0:.3f} (limit {r['psi']})",
                    feature=PREDICTION,
                    severity=r["severity"],
                    details={"ks": fd.ks, "n": fd.n},
                )
            )
    return out


def _range_finding(r: dict[str, Any], window: Window) -> Finding:
    m, v = window.model, window.version
    values = [p for p in window.predictions if p is not None]
    if r.get("classes"):
        allowed = set(r["classes"])
        bad = [p for p in values if str(p) not in allowed]
        expected = f"one of {', '.join(sorted(allowed))}"
    else:
        nums = np.asarray(values, dtype="float64") if values else np.zeros(0)
        low = -np.inf if r.get("low") is None else float(r["low"])
        high = np.inf if r.get("high") is None else float(r["high"])
        bad = list(nums[(nums < low) | (nums > high) | np.isnan(nums)])
        expected = f"within [{r.get('low')}, {r.get('high')}]"
    frac = len(bad) / len(values) if values else 0.0
    enough = len(values) >= r["min_rows"]
    sample = [float(b) if isinstance(b, int | float | np.floating) else str(b) for b in bad[:5]]
    return Finding(
        m,
        v,
        "prediction_range",
        frac > r["max_fraction"] if enough else None,
        frac,
        r["max_fraction"],
        f"{m} v{v}: {len(bad)} of {len(values)} predictions ({frac:.1%}) outside the expected range "
        f"({expected}), e.g. {sample}",
        severity=r["severity"],
        details={
            "out_of_range": len(bad),
            "predictions": len(values),
            "low": r.get("low"),
            "high": r.get("high"),
            "examples": sample,
        },
    )


# ---- model settings: per-model overrides ---------------------------------------------------------------
def load_overrides(engine: Engine, model: str) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        settings = conn.execute(select(t.models.c.settings).where(t.models.c.name == model)).scalar()
    return dict(((settings or {}).get("monitor") or {}).get("rules") or {})


def save_overrides(
    engine: Engine, model: str, overrides: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Merge rule overrides into the model's settings (other keys of the settings are kept)."""
    for rule in overrides:
        if rule not in DEFAULT_RULES:
            raise BadRequestError(f"unknown alert rule '{rule}' (known: {', '.join(DEFAULT_RULES)})")
    with engine.begin() as conn:
        current = conn.execute(select(t.models.c.settings).where(t.models.c.name == model)).first()
        if current is None:
            raise ModelNotFoundError(f"no model named '{model}' in the registry", model=model)
        settings = copy.deepcopy(current[0] or {})
        rules = settings.setdefault("monitor", {}).setdefault("rules", {})
        for rule, params in overrides.items():
            rules.setdefault(rule, {}).update(params)
        conn.execute(update(t.models).where(t.models.c.name == model).values(settings=settings))
    return rules


# ---- state: firing → resolved, one row per episode -----------------------------------------------------
@dataclass
class Transition:
    """An alert that started firing or was resolved in this evaluation: what gets notified."""

    status: str  # firing | resolved
    alert: dict[str, Any]


class AlertBook:
    """Alert rows in ``my_alerts``; ``apply`` moves the state machine and returns what changed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def firing(self, model: str | None = None) -> list[dict[str, Any]]:
        query = select(t.alerts).where(t.alerts.c.status == "firing").order_by(t.alerts.c.id)
        if model is not None:
            query = query.where(t.alerts.c.model == model)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def recent(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = select(t.alerts).order_by(t.alerts.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(t.alerts.c.model == model)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def apply(
        self,
        findings: Iterable[Finding],
        now: datetime | None = None,
        *,
        served: dict[str, set[int]] | None = None,
    ) -> list[Transition]:
        """Record new firing alerts, refresh ones still firing, resolve cleared ones (and ones whose version
        is no longer served, when ``served`` maps model → versions)."""
        now = now or datetime.now(UTC)
        changes: list[Transition] = []
        with self.engine.begin() as conn:
            open_rows = {
                (r["model"], r["version"], (r["details"] or {}).get("key")): r
                for r in (
                    _row(x)
                    for x in conn.execute(select(t.alerts).where(t.alerts.c.status == "firing")).mappings()
                )
            }
            for f in findings:
                row = open_rows.pop((f.model, f.version, f.key), None)
                if f.firing is None:
                    continue
                if f.firing and row is None:
                    details = {
                        **f.details,
                        "key": f.key,
                        "feature": f.feature,
                        "severity": f.severity,
                        "last_seen": now.isoformat(),
                        "notified": {},
                    }
                    values = dict(
                        model=f.model,
                        version=f.version,
                        rule=f.rule,
                        status="firing",
                        value=f.value,
                        threshold=f.threshold,
                        message=f.message,
                        started_at=now,
                        details=details,
                    )
                    new_id = conn.execute(insert(t.alerts).values(**values)).inserted_primary_key[0]
                    changes.append(Transition("firing", {"id": int(new_id), **values, "resolved_at": None}))
                elif f.firing and row is not None:
                    details = {**row["details"], **f.details, "last_seen": now.isoformat()}
                    conn.execute(
                        update(t.alerts)
                        .where(t.alerts.c.id == row["id"])
                        .values(value=f.value, message=f.message, details=details)
                    )
                elif row is not None:
                    changes.append(
                        self._resolve(conn, row, now, f"{f.message} (back within the limit)", f.value)
                    )
            for (model, version, _key), row in open_rows.items():
                if served is not None and model in served and version not in served[model]:
                    changes.append(
                        self._resolve(conn, row, now, f"{model} v{version} is no longer served", None)
                    )
        return changes

    @staticmethod
    def _resolve(
        conn: Any, row: dict[str, Any], now: datetime, message: str, value: float | None
    ) -> Transition:
        details = {**(row["details"] or {}), "resolve_message": message}
        conn.execute(
            update(t.alerts)
            .where(and_(t.alerts.c.id == row["id"], t.alerts.c.status == "firing"))
            .values(
                status="resolved",
                resolved_at=now,
                details=details,
                value=value if value is not None else row["value"],
            )
        )
        return Transition(
            "resolved",
            {
                **row,
                "status": "resolved",
                "resolved_at": now,
                "details": details,
                "value": value if value is not None else row["value"],
            },
        )

    def undelivered(self, limit: int = 500) -> list[Transition]:
        """Transitions whose webhook delivery failed earlier (``notified[status] is False``): retried on the
        next evaluation. Rows never attempted (no webhook configured) are not resent."""
        out = []
        query = select(t.alerts).order_by(t.alerts.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            for row in (_row(r) for r in conn.execute(query).mappings()):
                if ((row["details"] or {}).get("notified") or {}).get(row["status"]) is False:
                    out.append(Transition(row["status"], row))
        return out[::-1]

    def mark(self, alert_id: int, status: str, delivered: bool) -> None:
        """Remember whether the ``status`` message reached the webhook."""
        with self.engine.begin() as conn:
            details = conn.execute(select(t.alerts.c.details).where(t.alerts.c.id == alert_id)).scalar() or {}
            details = copy.deepcopy(details)
            details.setdefault("notified", {})[status] = delivered
            conn.execute(update(t.alerts).where(t.alerts.c.id == alert_id).values(details=details))


def _row(r: Any) -> dict[str, Any]:
    row = dict(r)
    for k in ("started_at", "resolved_at"):
        if row.get(k) is not None and row[k].tzinfo is None:
            row[k] = row[k].replace(tzinfo=UTC)  # SQLite hands back naive datetimes
    return row
