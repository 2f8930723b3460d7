"""Alert rows, ``modelyard_alerts``: one per episode of one rule on one model version, firing to resolved.

The state machine (what opens, refreshes and resolves a row) is ``monitor.state.AlertBook``; this store
only reads rows and writes a set of changes in one transaction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine, and_, insert, select, update

from modelyard.registry.lease import as_utc
from modelyard.registry.tables import alerts

AlertRow = dict[str, Any]


@dataclass(frozen=True)
class AlertUpdate:
    """New values for one row; with ``only_if_firing`` the row is left alone once resolved elsewhere."""

    alert_id: int
    values: Mapping[str, Any] = field(default_factory=dict)
    only_if_firing: bool = False


@runtime_checkable
class AlertStore(Protocol):
    def firing(self, model: str | None = None) -> list[AlertRow]: ...

    def recent(self, model: str | None = None, limit: int = 50) -> list[AlertRow]: ...

    def save(self, opened: Sequence[Mapping[str, Any]], updated: Sequence[AlertUpdate]) -> list[int]: ...

    def set_notified(self, alert_id: int, status: str, delivered: bool) -> None: ...


def _row(mapping: Mapping[Any, Any]) -> AlertRow:
    row = dict(mapping)
    for k in ("started_at", "resolved_at"):
        if row.get(k) is not None:
            row[k] = as_utc(row[k])  # SQLite hands back naive datetimes
    return row


class SqlAlertStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def firing(self, model: str | None = None) -> list[AlertRow]:
        """Open alerts, oldest first."""
        query = select(alerts).where(alerts.c.status == "firing").order_by(alerts.c.id)
        if model is not None:
            query = query.where(alerts.c.model == model)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def recent(self, model: str | None = None, limit: int = 50) -> list[AlertRow]:
        """The newest alerts, firing or resolved, newest first."""
        query = select(alerts).order_by(alerts.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(alerts.c.model == model)
        with self.engine.connect() as conn:
            return [_row(r) for r in conn.execute(query).mappings()]

    def save(self, opened: Sequence[Mapping[str, Any]], updated: Sequence[AlertUpdate]) -> list[int]:
        """Insert ``opened`` rows and apply ``updated`` in one transaction; the new rows' ids, in order."""
        ids: list[int] = []
        with self.engine.begin() as conn:
            for values in opened:
                result = conn.execute(insert(alerts).values(**values))
                ids.append(int(result.inserted_primary_key[0]))  # type: ignore[index]
            for change in updated:
                where = alerts.c.id == change.alert_id
                if change.only_if_firing:
                    where = and_(where, alerts.c.status == "firing")
                conn.execute(update(alerts).where(where).values(**change.values))
        return ids

    def set_notified(self, alert_id: int, status: str, delivered: bool) -> None:
        """Remember in the row's details whether the ``status`` message reached the webhook."""
        with self.engine.begin() as conn:
            details = conn.execute(select(alerts.c.details).where(alerts.c.id == alert_id)).scalar() or {}
            details = copy.deepcopy(details)
            details.setdefault("notified", {})[status] = delivered
            conn.execute(update(alerts).where(alerts.c.id == alert_id).values(details=details))
