"""Alert state: one row in ``modelyard_alerts`` per episode, from firing to resolved.

A small machine per alert key (model, version, rule, feature): ``ok → firing`` records a row and notifies
once; evaluations while it keeps firing update the row and notify nothing (deduplicated); ``firing →
resolved`` closes the row and sends a resolve message. An "unknown" verdict (too little traffic) changes
nothing, so a quiet night does not resolve a real alert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelyard.monitor.rules import Finding
from modelyard.registry.alerts import AlertStore, AlertUpdate, SqlAlertStore
from modelyard.registry.db import Engine


@dataclass
class Transition:
    """An alert that started firing or was resolved in this evaluation: what gets notified."""

    status: str  # firing | resolved
    alert: dict[str, Any]


class AlertBook:
    """Alert rows in ``modelyard_alerts``; ``apply`` moves the state machine and returns what changed."""

    def __init__(self, engine: Engine, store: AlertStore | None = None) -> None:
        self.engine = engine
        self.store: AlertStore = store or SqlAlertStore(engine)

    def firing(self, model: str | None = None) -> list[dict[str, Any]]:
        return self.store.firing(model)

    def recent(self, model: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self.store.recent(model, limit)

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
        opened: list[dict[str, Any]] = []
        updated: list[AlertUpdate] = []
        changes: list[Transition | int] = []  # a resolution, or the index of an opened row (id unknown yet)
        open_rows = {(r["model"], r["version"], (r["details"] or {}).get("key")): r for r in self.store.firing()}
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
                changes.append(len(opened))
                opened.append(dict(
                    model=f.model,
                    version=f.version,
                    rule=f.rule,
                    status="firing",
                    value=f.value,
                    threshold=f.threshold,
                    message=f.message,
                    started_at=now,
                    details=details,
                ))
            elif f.firing and row is not None:
                details = {**row["details"], **f.details, "last_seen": now.isoformat()}
                updated.append(AlertUpdate(row["id"], {"value": f.value, "message": f.message, "details": details}))
            elif row is not None:
                changes.append(self._resolve(updated, row, now, f"{f.message} (back within the limit)", f.value))
        for (model, version, _key), row in open_rows.items():
            if served is not None and model in served and version not in served[model]:
                changes.append(self._resolve(updated, row, now, f"{model} v{version} is no longer served", None))
        ids = self.store.save(opened, updated)
        return [
            Transition("firing", {"id": ids[c], **opened[c], "resolved_at": None}) if isinstance(c, int) else c
            for c in changes
        ]

    @staticmethod
    def _resolve(
        updated: list[AlertUpdate], row: dict[str, Any], now: datetime, message: str, value: float | None
    ) -> Transition:
        details = {**(row["details"] or {}), "resolve_message": message}
        values = {
            "status": "resolved",
            "resolved_at": now,
            "details": details,
            "value": value if value is not None else row["value"],
        }
        updated.append(AlertUpdate(int(row["id"]), values, only_if_firing=True))
        return Transition("resolved", {**row, **values})

    def undelivered(self, limit: int = 500) -> list[Transition]:
        """Transitions whose webhook delivery failed earlier (``notified[status] is False``): retried on the
        next evaluation. Rows never attempted (no webhook configured) are not resent."""
        out = [
            Transition(row["status"], row)
            for row in self.store.recent(limit=limit)
            if ((row["details"] or {}).get("notified") or {}).get(row["status"]) is False
        ]
        return out[::-1]

    def mark(self, alert_id: int, status: str, delivered: bool) -> None:
        """Remember whether the ``status`` message reached the webhook."""
        self.store.set_notified(alert_id, status, delivered)
