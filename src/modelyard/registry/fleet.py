"""Fleet heartbeats, ``modelyard_instances``: one row per serving process (every uvicorn worker), stream
consumer and batch run, with where it runs (host, pid, region and zone labels), what it serves (model,
alias, version, weight) and when it started and was last seen.

Each process writes its own row (an upsert on its instance id) every heartbeat period and marks it
``stopped`` when it ends cleanly; a process that dies simply stops beating, and readers call an instance
stale once its ``last_seen`` is older than a few periods (``monitor.fleet``). Old rows are pruned by the
writers themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from sqlalchemy import Engine, delete, insert, select, update

from modelyard.registry.lease import as_utc
from modelyard.registry.tables import instances

__all__ = ["FleetStore", "Instance", "SqlFleetStore"]

RUNNING, STOPPED = "running", "stopped"


@dataclass
class Instance:
    """One process of the fleet as its last heartbeat described it."""

    instance_id: str
    kind: str  # server | stream | batch
    host: str
    pid: int
    started_at: datetime
    last_seen: datetime
    region: str | None = None
    zone: str | None = None
    serving: list[dict[str, Any]] = field(default_factory=list)
    """``[{"model", "alias", "version", "weight"}]``: what the process answers with right now."""
    status: str = RUNNING
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "kind": self.kind, "host": self.host, "pid": self.pid,
                "region": self.region, "zone": self.zone, "serving": self.serving, "status": self.status,
                "started_at": self.started_at.isoformat(), "last_seen": self.last_seen.isoformat(),
                "details": self.details}


@runtime_checkable
class FleetStore(Protocol):
    def beat(self, instance: Instance) -> None:
        """Insert or refresh ``instance``'s row (its ``started_at`` stays the first one written)."""
        ...

    def stop(self, instance_id: str, at: datetime) -> None:
        """Mark the instance stopped (a clean exit), last seen ``at``."""
        ...

    def instances(self, seen_since: datetime | None = None) -> list[Instance]:
        """Every instance (seen since ``seen_since``), by region, host and pid."""
        ...

    def prune(self, before: datetime) -> int:
        """Delete the instances last seen before ``before``; how many."""
        ...


def _instance(row: Any) -> Instance:
    return Instance(instance_id=row["instance_id"], kind=row["kind"], host=row["host"], pid=int(row["pid"]),
                    region=row["region"], zone=row["zone"], serving=list(row["serving"] or []),
                    status=row["status"], started_at=as_utc(row["started_at"]),
                    last_seen=as_utc(row["last_seen"]), details=dict(row["details"] or {}))


class SqlFleetStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def beat(self, instance: Instance) -> None:
        values = {"kind": instance.kind, "host": instance.host, "pid": instance.pid, "region": instance.region,
                  "zone": instance.zone, "serving": instance.serving, "status": instance.status,
                  "last_seen": as_utc(instance.last_seen), "details": instance.details}
        with self.engine.begin() as conn:  # one writer per row (its own process): update, else insert
            done = conn.execute(update(instances).where(instances.c.instance_id == instance.instance_id)
                                .values(**values)).rowcount
            if not done:
                conn.execute(insert(instances).values(instance_id=instance.instance_id,
                                                      started_at=as_utc(instance.started_at), **values))

    def stop(self, instance_id: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(instances).where(instances.c.instance_id == instance_id)
                         .values(status=STOPPED, last_seen=as_utc(at)))

    def instances(self, seen_since: datetime | None = None) -> list[Instance]:
        query = select(instances)
        if seen_since is not None:
            query = query.where(instances.c.last_seen >= as_utc(seen_since))
        with self.engine.connect() as conn:
            rows = [_instance(r) for r in conn.execute(query).mappings()]
        return sorted(rows, key=lambda i: (i.region or "", i.zone or "", i.host, i.pid, i.instance_id))

    def prune(self, before: datetime) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(instances).where(instances.c.last_seen < as_utc(before))).rowcount)
