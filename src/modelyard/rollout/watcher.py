"""Automatic rollback: watch each live canary over a sliding window of the prediction log.

For every model whose canary has a weight above 0, ``Watcher.run_once`` reads the canary's records since
``window`` seconds ago (or since the canary alias last changed, whichever is later) and computes its error
rate, its p99 latency (absolute and as a ratio to the primary's), and its disagreement with the primary on
requests both answered (canary requests the server mirrored to the primary, logged on route ``mirror``, or
shadow records of the canary's version). When a figure
crosses its rule, the canary's weight is set to 0 and a ``rollback`` event records the figures.

Several replicas may run a watcher on one database: a lease row lets exactly one act per run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from modelyard.predlog import PredictionRecord, list_records
from modelyard.registry import AliasRecord, Registry
from modelyard.registry.lease import SqlLease, default_holder
from modelyard.rollout.policy import CANARY, MIRROR, PRODUCTION, SHADOW

log = logging.getLogger(__name__)
LEASE_NAME = "modelyard.rollout.watcher"
MAX_RECORDS = 50_000


@dataclass(frozen=True)
class WatchRules:
    """Thresholds of the automatic rollback; ``None`` turns a rule off."""

    window: float = 300.0
    min_requests: int = 20
    """Fewer canary requests than this in the window: too little evidence to act."""
    max_error_rate: float | None = 0.05
    max_p99_ms: float | None = None
    max_p99_ratio: float | None = 3.0
    """Canary p99 latency over the primary's p99 in the same window."""
    max_disagreement: float | None = 0.10
    disagreement_rel_tol: float = 0.05
    """A regression row disagrees when the two answers differ by more than this, relatively."""
    min_pairs: int = 20


@dataclass
class CanaryHealth:
    model: str
    canary_version: int
    primary_version: int | None
    weight: float
    since: str
    requests: int = 0
    errors: int = 0
    error_rate: float | None = None
    p99_ms: float | None = None
    primary_p99_ms: float | None = None
    compared_rows: int = 0
    disagreement: float | None = None
    breaches: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WatchRun:
    leader: bool
    checked: list[CanaryHealth] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _values(outputs: Any) -> list[Any]:
    if isinstance(outputs, dict):
        outputs = outputs.get("predictions", [outputs])
    if not isinstance(outputs, list):
        return [outputs]
    keys = ("prediction", "label", "value")
    return [next((o[k] for k in keys if k in o), None) if isinstance(o, dict) else o for o in outputs]


def disagreement(pairs: list[tuple[Any, Any]], task: str, rel_tol: float) -> float:
    """Share of row pairs (primary, canary) whose answers differ (beyond ``rel_tol`` for numbers)."""
    if task == "classification":
        return float(np.mean([str(a) != str(b) for a, b in pairs]))
    a = np.asarray([p[0] for p in pairs], dtype="float64")
    b = np.asarray([p[1] for p in pairs], dtype="float64")
    floor = max(1e-3 * float(np.nanmean(np.abs(a))), 1e-12)
    differs = ~(np.abs(b - a) <= rel_tol * np.maximum(np.abs(a), floor))  # NaN on either side counts
    return float(np.mean(differs))


class Watcher:
    """Evaluates canaries and rolls back unhealthy ones; a server calls ``run_once`` on a timer."""

    def __init__(self, registry: Registry, rules: WatchRules | None = None, *, holder: str | None = None,
                 lease_ttl: float = 30.0, models: list[str] | None = None) -> None:
        self.registry = registry
        self.rules = rules or WatchRules()
        self.holder = holder or default_holder()
        self.lease = SqlLease(registry.engine, LEASE_NAME, holder=self.holder, ttl=lease_ttl)
        self.models = models
        self._tasks: dict[tuple[str, int], str] = {}

    def _task(self, name: str, version: int) -> str:
        if (name, version) not in self._tasks:
            self._tasks[(name, version)] = self.registry.get_version(name, version).manifest.task
        return self._tasks[(name, version)]

    def evaluate(self, name: str, aliases: dict[str, AliasRecord],
                 now: datetime | None = None) -> CanaryHealth | None:
        """The canary's figures over the window, with the rules it breaks; None without a live canary."""
        canary = aliases.get(CANARY)
        if canary is None or not canary.weight:
            return None
        rules = self.rules
        now = now or datetime.now(UTC)
        since = max(now - timedelta(seconds=rules.window), _aware(canary.updated_at))
        primary = aliases.get(PRODUCTION)
        health = CanaryHealth(name, canary.version, primary.version if primary else None,
                              float(canary.weight), since.isoformat())
        engine = self.registry.engine
        records = list_records(engine, name, since=since, route=CANARY, version=canary.version,
                               limit=MAX_RECORDS)
        health.requests = len(records)
        if health.requests < rules.min_requests:
            return health
        health.errors = sum(r.error is not None for r in records)
        health.error_rate = health.errors / health.requests
        if rules.max_error_rate is not None and health.error_rate > rules.max_error_rate:
            health.breaches.append(f"error rate {health.error_rate:.1%} > {rules.max_error_rate:.1%}")
        primaries = list_records(engine, name, since=since, route="primary", limit=MAX_RECORDS)
        health.p99_ms = _p99(records)
        health.primary_p99_ms = _p99(primaries)
        if health.p99_ms is not None:
            if rules.max_p99_ms is not None and health.p99_ms > rules.max_p99_ms:
                health.breaches.append(f"p99 latency {health.p99_ms:.1f} ms > {rules.max_p99_ms:g} ms")
            if (rules.max_p99_ratio is not None and health.primary_p99_ms
                    and health.p99_ms > rules.max_p99_ratio * health.primary_p99_ms):
                health.breaches.append(f"p99 latency {health.p99_ms:.1f} ms > {rules.max_p99_ratio:g}x the "
                                       f"primary's {health.primary_p99_ms:.1f} ms")
        shadows = list_records(engine, name, since=since, route=SHADOW, version=canary.version,
                               limit=MAX_RECORDS)
        mirrors = list_records(engine, name, since=since, route=MIRROR, limit=MAX_RECORDS)
        pairs = _pairs([*primaries, *mirrors], [*records, *shadows])
        health.compared_rows = len(pairs)
        if len(pairs) >= rules.min_pairs:
            task = self._task(name, canary.version)
            health.disagreement = disagreement(pairs, task, rules.disagreement_rel_tol)
            if rules.max_disagreement is not None and health.disagreement > rules.max_disagreement:
                health.breaches.append(f"disagreement with the primary {health.disagreement:.1%} > "
                                       f"{rules.max_disagreement:.1%}")
        return health

    def run_once(self, now: datetime | None = None) -> WatchRun:
        """One pass over every live canary, if this process holds the lease. Never raises on a bad model."""
        if not self.lease.acquire():
            return WatchRun(leader=False)
        run = WatchRun(leader=True)
        for name, aliases in sorted(self.registry.all_aliases().items()):
            if self.models is not None and name not in self.models:
                continue
            try:
                health = self.evaluate(name, aliases, now)
            except Exception:  # one model's bad record must not stop the others being watched
                log.exception("canary watcher: cannot evaluate %s", name)
                continue
            if health is None:
                continue
            run.checked.append(health)
            if health.breaches and self._roll_back(health):
                run.rolled_back.append(name)
        return run

    def _roll_back(self, health: CanaryHealth) -> bool:
        current = self.registry.aliases(health.model).get(CANARY)  # re-read: act on what is live now
        if current is None or not current.weight or current.version != health.canary_version:
            return False
        if not self.lease.acquire():  # renew; lost it (a long pause): let the new holder decide
            return False
        details = {**health.to_dict(), "rules": asdict(self.rules), "watcher": self.holder}
        self.registry.set_alias(health.model, CANARY, health.canary_version, weight=0.0, kind="rollback",
                                actor=f"watcher:{self.holder}",
                                reason="automatic canary rollback: " + "; ".join(health.breaches),
                                details=details)
        return True

    def run(self, interval: float = 5.0, *, stop: threading.Event | None = None,
            max_runs: int | None = None) -> None:
        """Call ``run_once`` every ``interval`` seconds until ``stop`` is set or ``max_runs`` passes ran."""
        stop = stop or threading.Event()
        runs = 0
        try:
            while not stop.is_set():
                try:
                    self.run_once()
                except Exception:  # the database may be away for a while: keep watching
                    log.exception("canary watcher: run failed")
                runs += 1
                if max_runs is not None and runs >= max_runs:
                    break
                stop.wait(interval)
        finally:
            try:
                self.lease.release()
            except Exception:
                log.warning("canary watcher: could not release the lease; it expires in %ss", self.lease.ttl)


def _p99(records: list[PredictionRecord]) -> float | None:
    lat = [r.latency_ms for r in records if r.latency_ms is not None and r.error is None]
    return float(np.quantile(lat, 0.99)) if lat else None


def _pairs(primaries: list[PredictionRecord], others: list[PredictionRecord]) -> list[tuple[Any, Any]]:
    by_id = {r.request_id: r for r in primaries if r.error is None}
    pairs: list[tuple[Any, Any]] = []
    for rec in others:
        base = by_id.get(rec.request_id)
        if base is None or rec.error is not None:
            continue
        a, b = _values(base.outputs), _values(rec.outputs)
        if len(a) == len(b):
            pairs.extend(zip(a, b, strict=True))
    return pairs
