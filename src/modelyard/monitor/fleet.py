"""What runs where: this process's heartbeat (``FleetMember``), and the fleet as a reader sees it (``fleet_view``).

Every server process (each uvicorn worker), stream consumer and batch run is a ``FleetMember``: it writes
its row of ``registry.fleet`` (instance id, kind, host, pid, ``MODELYARD_REGION`` / ``MODELYARD_ZONE``, what
it serves, start and last-seen time) every ``MODELYARD_HEARTBEAT_INTERVAL`` seconds. In the server the beat
is a per-process chore of the one scheduler (``monitor.scheduler``: it runs in every process, lease or not);
stream consumers beat from their fetch loop and batch runs from their chunk commits (``beat_if_due``).

``fleet_view`` turns the rows into what ``GET /v1/fleet``, ``modelyard fleet`` and the dashboard show: every
instance with ``stale`` (running, but no beat for ``STALE_BEATS`` of its periods), a grid of regions x
models x versions, and version skew: live instances answering one alias of one model with two versions at
once, longer after the alias moved than the instances need to follow it. A canary and a shadow are other
aliases, so a rollout is never skew; a batch run is pinned to the version it started with and is left out.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from modelyard.config import Settings
from modelyard.durations import format_duration
from modelyard.registry import AliasRecord, Registry
from modelyard.registry.db import Engine
from modelyard.registry.fleet import RUNNING, FleetStore, Instance, SqlFleetStore
from modelyard.registry.lease import as_utc

__all__ = ["STALE_BEATS", "FleetMember", "fleet_view", "instance_id", "read_fleet"]

log = logging.getLogger("modelyard.monitor")
STALE_BEATS = 3
"""An instance that missed this many heartbeats is stale (it may be dead, or cut off from the database)."""
KEEP = timedelta(days=1)  # rows last seen longer ago are pruned by the writers
PRUNE_EVERY = 3600.0

Serving = list[dict[str, Any]]


def instance_id(kind: str) -> str:
    """Unique per process and kind: host, pid and a random suffix."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class FleetMember:
    """This process's row in the fleet. ``serving()`` says what it serves now (asked at every beat).

    As a scheduler chore: ``name``, ``every``, ``run(now)`` and ``describe()``."""

    name = "heartbeat"

    def __init__(self, store: FleetStore, kind: str, serving: Callable[[], Serving], *, every: float = 15.0,
                 region: str | None = None, zone: str | None = None,
                 details: Mapping[str, Any] | None = None) -> None:
        self.store = store
        self.kind = kind
        self.serving = serving
        self.every = every
        self.region = region
        self.zone = zone
        self.details = {**(details or {}), "every": every}
        self.instance_id = instance_id(kind)
        self.started_at = datetime.now(UTC)
        self._last_beat: datetime | None = None
        self._last_prune: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine, kind: str, serving: Callable[[], Serving],
                      details: Mapping[str, Any] | None = None) -> FleetMember:
        return cls(SqlFleetStore(engine), kind, serving, every=settings.heartbeat_interval,
                   region=settings.region, zone=settings.zone, details=details)

    def describe(self) -> str:
        where = "/".join(x for x in (self.region, self.zone) if x) or "no region label"
        return f"fleet heartbeat every {format_duration(self.every)} as {self.instance_id} ({where})"

    def beat(self, now: datetime | None = None) -> None:
        """Write this process's row now (and prune long-gone rows once an hour)."""
        now = now or datetime.now(UTC)
        self.store.beat(Instance(instance_id=self.instance_id, kind=self.kind, host=socket.gethostname(),
                                 pid=os.getpid(), started_at=self.started_at, last_seen=now, region=self.region,
                                 zone=self.zone, serving=self.serving(), status=RUNNING,
                                 details=dict(self.details)))
        self._last_beat = now
        if self._last_prune is None or (now - self._last_prune).total_seconds() >= PRUNE_EVERY:
            self._last_prune = now
            self.store.prune(now - KEEP)

    def run(self, now: datetime) -> None:
        self.beat(now)

    def due(self, now: datetime | None = None) -> bool:
        """True when the last beat is ``every`` seconds old (or there was none)."""
        now = now or datetime.now(UTC)
        return self._last_beat is None or (now - self._last_beat).total_seconds() >= self.every

    def beat_if_due(self, now: datetime | None = None) -> bool:
        """Beat when the last beat is ``every`` seconds old; never raises (a heartbeat is not worth a crash)."""
        now = now or datetime.now(UTC)
        if not self.due(now):
            return False
        try:
            self.beat(now)
        except Exception as exc:
            self._last_beat = now  # try again one period later, not at every call
            log.warning("fleet heartbeat not written: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return False
        return True

    def stop(self) -> None:
        """Mark this process stopped (a clean exit); never raises."""
        try:
            self.store.stop(self.instance_id, datetime.now(UTC))
        except Exception as exc:
            log.warning("fleet: could not mark %s stopped: %s", self.instance_id, exc)


def _stale(instance: Instance, now: datetime) -> bool:
    every = float(instance.details.get("every") or 15.0)
    return instance.status == RUNNING and (now - instance.last_seen).total_seconds() > STALE_BEATS * every


def fleet_view(instances: list[Instance], aliases: Mapping[str, Mapping[str, AliasRecord]],
               now: datetime | None = None) -> dict[str, Any]:
    """The fleet, JSON-ready: instances (with ``stale`` and ``age_seconds``), the region x model x version
    grid, and the version skews."""
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    grid: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    by_alias: dict[tuple[str, str], dict[int, list[str]]] = {}
    slowest = 0.0  # the longest heartbeat period: how long an alias move may take to show in the rows
    for inst in instances:
        stale = _stale(inst, now)
        live = inst.status == RUNNING and not stale
        rows.append({**inst.to_dict(), "stale": stale,
                     "age_seconds": round((now - inst.last_seen).total_seconds(), 1)})
        if not live:
            continue
        slowest = max(slowest, float(inst.details.get("every") or 15.0))
        region = inst.region or "(no region)"
        for s in inst.serving:
            if s.get("alias") == "canary" and not s.get("weight"):
                continue  # a canary without traffic answers nobody
            model, alias, version = str(s["model"]), str(s.get("alias") or "-"), int(s["version"])
            cell = grid.setdefault((region, model, alias, version), {
                "region": region, "model": model, "alias": alias, "version": version, "instances": 0,
                "kinds": []})
            cell["instances"] += 1
            if inst.kind not in cell["kinds"]:
                cell["kinds"].append(inst.kind)
            if inst.kind != "batch" and not s.get("pinned"):
                by_alias.setdefault((model, alias), {}).setdefault(version, []).append(inst.instance_id)
    grace = 2 * slowest + 10.0
    skew = []
    for (model, alias), versions in sorted(by_alias.items()):
        if len(versions) < 2:
            continue
        record = aliases.get(model, {}).get(alias)
        moved = (now - as_utc(record.updated_at)).total_seconds() if record is not None else None
        if moved is not None and moved < grace:
            continue  # the instances are still following the alias move
        counts = ", ".join(f"v{v} on {len(ids)}" for v, ids in sorted(versions.items()))
        skew.append({"model": model, "alias": alias, "registry_version": record.version if record else None,
                     "versions": {str(v): ids for v, ids in sorted(versions.items())},
                     "message": f"{model}@{alias} is answered by {len(versions)} versions at once ({counts})"
                                + (f"; the registry says v{record.version}" if record else "")})
    return {"generated_at": now.isoformat(), "instances": rows,
            "regions": sorted({c["region"] for c in grid.values()}),
            "grid": [grid[k] for k in sorted(grid)], "skew": skew,
            "live": sum(1 for r in rows if r["status"] == RUNNING and not r["stale"]),
            "stale": sum(1 for r in rows if r["stale"])}


def read_fleet(registry: Registry, *, since: timedelta = timedelta(hours=1),
               now: datetime | None = None) -> dict[str, Any]:
    """``fleet_view`` of the instances seen in the last ``since`` (blocking: two queries)."""
    now = now or datetime.now(UTC)
    since = min(since, timedelta(days=366))  # rows are pruned after a day anyway
    view = fleet_view(SqlFleetStore(registry.engine).instances(seen_since=now - since), registry.all_aliases(), now)
    view["since_seconds"] = since.total_seconds()
    return view
