"""The scheduler inside the server: one task running the alert rules and the canary rollback rules.

Every worker process runs one ``monitor.scheduler.Scheduler`` with up to three rule sets: the monitor's alert rules
(drift, range, errors, latency) every ``MODELYARD_MONITOR_INTERVAL`` seconds over the last
``MODELYARD_MONITOR_WINDOW`` of the prediction log, recorded and sent to ``MODELYARD_ALERT_WEBHOOK``; and the
canary watcher's rollback rules every ``MODELYARD_WATCH_INTERVAL`` seconds (thresholds from
``MODELYARD_WATCH_RULES``, then each model's settings); and the retrain rule set every
``MODELYARD_RETRAIN_INTERVAL`` seconds (scheduled retrains, and the ones an alert whose rule names
``action = "retrain"`` requested), gated by ``checks`` before the canary. One lease among all replicas lets
exactly one process act; the others skip their runs. An interval of 0 turns its rule set off; without the
prediction log there is nothing to read and no rule set runs. After a rollback, a promotion by the watcher or
a retrain, this process re-reads its aliases at once.

The same loop carries this process's fleet heartbeat (``monitor.fleet.FleetMember``, a chore run in every
process, lease or not, every ``MODELYARD_HEARTBEAT_INTERVAL`` seconds): the versions and aliases it serves,
its host, pid and ``MODELYARD_REGION`` / ``MODELYARD_ZONE``; a clean stop marks its row stopped.

The dashboard asks ``drift()``: the last run's reports when this process made it, else a report computed
here from the log at most once per interval (the lease holder may be another worker or replica).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from fastapi import Request

from modelyard.checks import gate_factory
from modelyard.config import Settings
from modelyard.durations import parse_duration
from modelyard.monitor.alerting import AlertRuleSet
from modelyard.monitor.drift import DriftReport
from modelyard.monitor.fleet import FleetMember, Serving
from modelyard.monitor.rules import RuleSet
from modelyard.monitor.scheduler import LEASE, Scheduler, SchedulerRun
from modelyard.registry import Registry
from modelyard.registry.lease import SqlLease
from modelyard.rollout.retrain import RetrainRuleSet, alert_actions
from modelyard.rollout.watcher import CanaryRuleSet, watch_rules
from modelyard.serve.repository import ModelRepository

__all__ = ["ServerScheduler", "server_scheduler"]

log = logging.getLogger("modelyard.serve")
STOP_WAIT = 10.0  # seconds shutdown waits for a run in progress; then the lease is left to expire

DriftMap = dict[tuple[str, int], DriftReport | None]


class ServerScheduler:
    """One server process's scheduler task, and the drift reports the dashboard draws."""

    def __init__(self, settings: Settings, registry: Registry, repository: ModelRepository) -> None:
        self.window: timedelta = parse_duration(settings.monitor_window, what="MODELYARD_MONITOR_WINDOW")
        self.interval = settings.monitor_interval
        self.repository = repository
        self.alerts = AlertRuleSet.from_settings(settings, registry, actions=alert_actions(registry))
        self.registry = registry
        rule_sets: list[RuleSet] = [self.alerts] if self.interval > 0 else []
        self.canary: CanaryRuleSet | None = None
        if settings.watch_interval > 0:
            self.canary = CanaryRuleSet(registry, watch_rules(settings.watch_rules), every=settings.watch_interval)
            rule_sets.append(self.canary)
        if settings.retrain_interval > 0:
            rule_sets.append(RetrainRuleSet(registry, gate_factory(), every=settings.retrain_interval))
        self._off = None if rule_sets and settings.prediction_log else (
            "no prediction log" if not settings.prediction_log else
            "MODELYARD_MONITOR_INTERVAL, MODELYARD_WATCH_INTERVAL and MODELYARD_RETRAIN_INTERVAL are 0")
        if not settings.prediction_log:
            rule_sets = []  # nothing to read
        self.member = FleetMember.from_settings(settings, registry.engine, "server", self.serving,
                                                details={"pattern": "serve"})
        tick = min((rs.every for rs in rule_sets), default=1.0)
        self.scheduler = Scheduler(SqlLease(registry.engine, LEASE, ttl=max(30.0, 3 * tick)), rule_sets,
                                   chores=[self.member])
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._cache: tuple[float, DriftMap] | None = None
        self._cache_lock = threading.Lock()

    def serving(self) -> Serving:
        """What this process answers with now, for its heartbeat: one entry per loaded alias."""
        return [{"model": m.name, "alias": alias, "version": version, "weight": m.weights.get(alias)}
                for m in self.repository.info() for alias, version in sorted(m.loaded.items())]

    def start(self) -> None:
        if self._off is not None:
            log.info("alert and canary rules off (%s)", self._off)
        self._task = asyncio.create_task(self.scheduler.run_forever(self._stop, after=self._after),
                                         name="modelyard-scheduler")
        log.info("%s", self.scheduler.describe())
        if self.canary is not None and self.scheduler.rule_sets:
            for line in self.canary.overrides():
                log.info("%s", line)

    async def _after(self, run: SchedulerRun) -> None:
        watched = run.results.get(CanaryRuleSet.name)
        retrained = run.results.get(RetrainRuleSet.name)
        if (watched is not None and (getattr(watched, "rolled_back", None) or getattr(watched, "promoted", None))) \
                or (retrained is not None and getattr(retrained, "results", None)):
            await self.repository.refresh()

    async def stop(self) -> None:
        """Let a run in progress finish (bounded), then give the lease up for the next replica."""
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout=STOP_WAIT)
        except TimeoutError:
            self._task.cancel()
            log.warning("scheduler run still busy after %gs at shutdown; its lease will expire", STOP_WAIT)
            return
        try:
            await asyncio.to_thread(self.scheduler.release)
        except Exception as exc:  # the database may be away at shutdown: the lease then simply expires
            log.warning("scheduler lease not released: %s", exc)
        await asyncio.to_thread(self.member.stop)

    def drift(self) -> DriftMap:
        """Drift per served (model, version) for the dashboard; blocking (call it in a thread)."""
        run = self.alerts.last_run
        fresh = 2 * max(self.interval, 1.0) + 5
        if run is not None and (datetime.now(UTC) - run.at).total_seconds() < fresh and \
                self.scheduler.leading:
            return dict(self.alerts.latest)
        with self._cache_lock:  # one computation at a time; viewers in between share it
            ttl = self.interval if self.interval > 0 else 60.0
            if self._cache is not None and time.monotonic() - self._cache[0] < ttl:
                return self._cache[1]
            now = datetime.now(UTC)
            reports: DriftMap = {}
            for model, versions in sorted(self.alerts.served().items()):
                try:
                    for st in self.alerts.evaluate(model, versions, now):
                        reports[(model, st.window.version)] = st.drift
                except Exception:
                    log.exception("dashboard: drift of %s could not be computed", model)
            self._cache = (time.monotonic(), reports)
            return reports


def server_scheduler(request: Request) -> ServerScheduler:
    return request.app.state.modelyard_scheduler  # type: ignore[no-any-return]
