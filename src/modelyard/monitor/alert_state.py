"""Alert state: one row in ``my_alerts`` per episode, from firing to resolved.

A small machine per alert key (model, version, rule, feature): ``ok → firing`` records a row and notifies
once; evaluations while it keeps firing update the row and notify nothing (deduplicated); ``firing →
resolved`` closes the row and sends a resolve message. An "unknown" verdict (too little traffic) changes
nothing, so a quiet night does not resolve a real alert.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from modelyard.monitor.rules import Finding
from modelyard.registry import tables as t


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
                    result = conn.execute(insert(t.alerts).values(**values))
                    new_id = result.inserted_primary_key[0]  # type: ignore[index]
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
