"""The event log, ``modelyard_events``: one row for every change to a model (publish, alias moves, weights,
rollbacks), with who did it, why and the figures. Written inside the transaction of the change itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Connection, Engine, insert, select

from modelyard.registry import tables as t


@dataclass(frozen=True)
class EventRecord:
    id: int
    model: str
    kind: str
    alias: str | None
    from_version: int | None
    to_version: int | None
    actor: str | None
    reason: str | None
    details: dict[str, Any] | None
    at: datetime


@runtime_checkable
class EventLog(Protocol):
    def recent(self, model: str | None = None, *, limit: int = 100) -> list[EventRecord]: ...

    def get(self, event_id: int) -> EventRecord | None: ...


def write_event(conn: Connection, model_id: int, kind: str, **values: Any) -> None:
    """Append one event in the caller's transaction (so the change and its event commit together)."""
    conn.execute(insert(t.events).values(model_id=model_id, kind=kind, at=t.utcnow(), **values))


class SqlEventLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _select(self) -> Any:
        return select(t.events, t.models.c.name).join(t.models, t.models.c.id == t.events.c.model_id)

    def recent(self, model: str | None = None, *, limit: int = 100) -> list[EventRecord]:
        """The newest events, newest first; of one model when ``model`` is given."""
        query = self._select().order_by(t.events.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(t.models.c.name == model)
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(query).mappings()]

    def get(self, event_id: int) -> EventRecord | None:
        """One event by its id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(self._select().where(t.events.c.id == event_id)).mappings().first()
        return None if row is None else _record(row)


def _record(r: Any) -> EventRecord:
    return EventRecord(id=r["id"], model=r["name"], kind=r["kind"], alias=r["alias"],
                       from_version=r["from_version"], to_version=r["to_version"], actor=r["actor"],
                       reason=r["reason"], details=r["details"], at=r["at"])
